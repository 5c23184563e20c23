"""``AdapterLayer``: the shared adapter-holding base of every low-rank layer kind.

    y = base(x) + Σ_name  weight_name · scaling_name · B_name A_name dropout_name(x)

The base layer stays untouched (``base_layer``), so its weights, flags and state-dict entries are
the user's own. Adapters live in ``ModuleDict``s keyed by name (PEFT's layout: ``lora_A.<name>``,
``lora_B.<name>``), each with its frozen :class:`AdapterSpec`. A kind (linear, conv, embedding)
says only how A and B are shaped, how ``B A x`` is computed and how ``B A`` looks as a weight
(attention: attention.py, which adapts two weights).

``weight`` and ``bias`` read the base layer's own tensors (what code that asks for a dtype or a
device wants); layers whose parent computes with them directly are refused by ``add_adapter``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from mlra.adapters.spec import AdapterSpec
from mlra.adapters.state import DISABLED, LayerRoute, Request, new_key, overrides
from mlra.errors import ConfigError, MergeError, MlraError

__all__ = ["AdapterLayer", "expand_rows", "tensor_of"]


def tensor_of(module: nn.Module, attr: str = "weight") -> torch.Tensor:
    """``module.<attr>`` as a tensor (typed: ``nn.Module`` attributes are not)."""
    value = getattr(module, attr)
    assert isinstance(value, torch.Tensor)
    return value


class AdapterLayer(nn.Module):
    """Wraps one layer; holds any number of named adapters for it."""

    kind: ClassVar[str] = "layer"
    _unmerged_weight: torch.Tensor | None  # a non-persistent buffer: moves with model.to()

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.specs: dict[str, AdapterSpec] = {}
        self.scaling: dict[str, float] = {}
        self.active: dict[str, float] = {}  # the model's active adapters and their weights
        self.merged: dict[str, float] = {}  # what is merged into base_layer.weight right now
        self.register_buffer("_unmerged_weight", None, persistent=False)
        self._key = new_key()
        # The request setting as compiled / DataParallel forwards see it (see mlra.adapters.state)
        self._request: Request | None = None
        self._holders: dict[int, tuple[int, Request]] = {}  # block token -> (thread, setting)
        self._conflict = False

    # -- what a kind defines --------------------------------------------------------------------

    @classmethod
    def features(cls, base: nn.Module) -> tuple[int, int]:
        """(in, out): the sizes that A reads and B writes."""
        raise NotImplementedError

    @classmethod
    def pair_shapes(cls, base: nn.Module, rank: int) -> dict[str, tuple[int, ...]]:
        """The shapes of A's and B's weights (also as PEFT stores them)."""
        n_in, n_out = cls.features(base)
        return {"A": (rank, n_in), "B": (n_out, rank)}

    def make_pair(self, rank: int, factory: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
        n_in, n_out = self.features(self.base_layer)
        a = nn.Linear(n_in, rank, bias=False, **factory)
        b = nn.Linear(rank, n_out, bias=False, **factory)
        return a, b

    def lowrank(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """``B A dropout(x)`` of adapter ``name`` (unscaled), in the adapter's dtype."""
        h = self.lora_dropout[name](x.to(self.a_weight(name).dtype))
        out: torch.Tensor = self.B(name)(self.A(name)(h))
        return out

    def delta(self, name: str) -> torch.Tensor:
        """``B A`` of adapter ``name`` laid out like the base weight, in float32 (unscaled)."""
        raise NotImplementedError

    @classmethod
    def base_tensors(cls, base: nn.Module) -> dict[str, torch.Tensor]:
        """The base layer's tensors that an adapter's update is relative to (what the base
        fingerprint hashes): its weight, and its bias if it has one."""
        tensors = {"weight": tensor_of(base)}
        bias = getattr(base, "bias", None)
        if isinstance(bias, torch.Tensor):
            tensors["bias"] = bias
        return tensors

    def routed(self, x: torch.Tensor, route: LayerRoute) -> torch.Tensor:
        """Every row through its own adapter. Here: each used adapter over the whole input,
        masked to its rows (a kind with a batched form overrides this)."""
        index = expand_rows(route, x)
        out: torch.Tensor = torch.zeros((), dtype=x.dtype, device=x.device)
        for k, name in enumerate(route.names):
            y = self.lowrank(x, name) * self.scaling[name]
            shape = [1] * y.dim()
            shape[route.batch_dim] = -1
            out = out + y * (index == k).to(y.dtype).view(shape)
        return out

    def reset(self, name: str) -> None:
        """(Re-)initialise adapter ``name``: A random, B zero, so it starts as the base."""
        a, b, spec = self.a_weight(name), self.b_weight(name), self.specs[name]
        with torch.no_grad():
            if spec.init == "gaussian":
                nn.init.normal_(a, std=1.0 / spec.rank)
            else:  # "lora": as nn.Linear initialises itself
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            nn.init.zeros_(b)

    # -- the base layer's view ------------------------------------------------------------------

    @property
    def weight(self) -> torch.Tensor:
        """The base layer's weight (merged adapters included while merged)."""
        return tensor_of(self.base_layer)

    @property
    def bias(self) -> torch.Tensor | None:
        bias: torch.Tensor | None = getattr(self.base_layer, "bias", None)
        return bias

    @property
    def base_weight(self) -> torch.Tensor:
        """The base layer's own weight, also while an adapter is merged into it."""
        if self._unmerged_weight is not None:
            return self._unmerged_weight
        return self.weight.detach()

    def extra_repr(self) -> str:
        return f"adapters={list(self.specs)}, active={self.active}, merged={bool(self.merged)}"

    # -- adapters -------------------------------------------------------------------------------

    def A(self, name: str) -> nn.Module:
        return self.lora_A[name]

    def B(self, name: str) -> nn.Module:
        return self.lora_B[name]

    def a_weight(self, name: str) -> torch.Tensor:
        return tensor_of(self.lora_A[name])

    def b_weight(self, name: str) -> torch.Tensor:
        return tensor_of(self.lora_B[name])

    def add(self, name: str, spec: AdapterSpec, dtype: torch.dtype) -> None:
        """Create adapter ``name`` on the base weight's device, in ``dtype``."""
        a, b = self.make_pair(spec.rank, {"device": self.weight.device, "dtype": dtype})
        dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        for container, module in ((self.lora_A, a), (self.lora_B, b), (self.lora_dropout, dropout)):
            container[name] = module.train(self.training)  # a model in eval mode stays so
        self.specs[name] = spec
        self.scaling[name] = spec.scaling
        if not self.weight.is_meta:
            self.reset(name)

    def remove(self, name: str) -> None:
        for container in (self.lora_A, self.lora_B, self.lora_dropout):
            del container[name]
        del self.specs[name], self.scaling[name]
        self.active.pop(name, None)

    # -- merging --------------------------------------------------------------------------------

    def delta_weight(self, weights: dict[str, float]) -> torch.Tensor:
        """Σ weight · scaling · B A over ``weights``, in float32, laid out like the base weight."""
        delta = torch.zeros(self.weight.shape, dtype=torch.float32, device=self.weight.device)
        for name, w in weights.items():
            delta.add_(self.delta(name), alpha=w * self.scaling[name])
        return delta

    def merge_plan(self) -> tuple[dict[str, float], torch.Tensor] | None:
        """What ``merge`` would write: the active adapters this layer carries and the new weight.

        Computed in float32 and cast once, so a merge in bf16/fp16 rounds once, not per adapter.
        Nothing is changed; the caller checks the result of every layer before committing any.
        """
        weights = {n: w for n, w in self.active.items() if n in self.specs}
        if self.merged or not weights:
            return None
        base = self.weight.detach()
        return weights, (base.float() + self.delta_weight(weights)).to(base.dtype)

    def commit_merge(self, weights: dict[str, float], merged_weight: torch.Tensor) -> None:
        self._unmerged_weight = self.weight.detach().clone()
        with torch.no_grad():
            self.weight.copy_(merged_weight)  # in place: optimisers and hooks keep their reference
        self.merged = weights

    def unmerge(self) -> None:
        """Put the exact base weight back (a copy kept at merge time, not a subtraction)."""
        if self._unmerged_weight is None:
            return
        with torch.no_grad():
            self.weight.copy_(self._unmerged_weight)
        self._unmerged_weight = None
        self.merged = {}

    # -- request settings -----------------------------------------------------------------------

    def hold(self, token: int, request: Request) -> None:
        """A ``disabled``/``route`` block starts: the attribute copy of its setting."""
        self._holders[token] = (threading.get_ident(), request)
        self._sync()

    def release(self, token: int) -> None:
        self._holders.pop(token, None)
        self._sync()

    def _sync(self) -> None:
        held = list(self._holders.values())
        self._request = held[-1][1] if held else None
        self._conflict = len({thread for thread, _ in held}) > 1

    def _current(self) -> Request | None:
        if torch.compiler.is_compiling() or getattr(self, "_is_replica", False):
            if self._conflict:
                raise MlraError(
                    "route()/disabled() blocks of several threads are open on this model, and a "
                    "compiled (torch.compile) or nn.DataParallel forward cannot tell them apart; "
                    "run such requests one at a time, or eagerly"
                )
            if isinstance(self._request, LayerRoute) and getattr(self, "_is_replica", False):
                raise ConfigError(
                    "route() cannot be used under nn.DataParallel: each replica sees a slice of "
                    "the batch, so its rows cannot be matched to the routed ones; route the "
                    "unwrapped model (or use DistributedDataParallel, one process per device)"
                )
            return self._request
        return overrides.get().get(self._key)

    # -- forward --------------------------------------------------------------------------------

    def _checked_request(self) -> Request | None:
        """This forward's ``disabled``/``route`` setting; refused while adapters are merged."""
        request = self._current()
        if self.merged and request is not None:
            raise MergeError(
                "adapters are merged into the base weights; call mlra.unmerge(model) before "
                "using disabled() or route()"
            )
        return request

    def fused(self, x: torch.Tensor) -> torch.Tensor | None:
        """Base output plus active adapters in one step, where a kind can do that and nothing
        could tell; None otherwise (the plain path below runs)."""
        return None

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        request = self._checked_request()
        if request is None and not self.merged and not args and not kwargs:
            fused = self.fused(x)
            if fused is not None:
                return fused
        result: torch.Tensor = self.base_layer(x, *args, **kwargs)
        if self.merged or request is DISABLED:
            return result
        if isinstance(request, LayerRoute):
            return (result + self.routed(x, request)).to(result.dtype)
        out = result
        for name, w in self.active.items():
            if name in self.specs:  # else: an active adapter that does not cover this layer
                out = self.add_lowrank(out, x, name, w * self.scaling[name])
        return out.to(result.dtype)

    def add_lowrank(
        self, out: torch.Tensor, x: torch.Tensor, name: str, coef: float
    ) -> torch.Tensor:
        """``out + coef · B A dropout(x)`` (a kind may fuse the last product into the sum)."""
        return out + self.lowrank(x, name) * coef


def expand_rows(route: LayerRoute, x: torch.Tensor) -> torch.Tensor:
    """The route's row index for input ``x``, checked against ``x``'s batch dimension.

    A batch that is k times the routed rows is generation that expanded each row k times in place
    (beam search, ``num_return_sequences``: ``repeat_interleave``), so each row's adapter repeats.
    """
    rows = route.index.shape[0]
    if route.batch_dim >= x.dim():
        raise ConfigError(
            f"route(batch_dim={route.batch_dim}) but a layer received input of shape "
            f"{tuple(x.shape)}"
        )
    batch = x.shape[route.batch_dim]
    if batch == rows:
        return route.index
    if batch > rows and batch % rows == 0:
        return route.index.repeat_interleave(batch // rows)
    raise ConfigError(
        f"route() was given {rows} rows but a layer received a batch of {batch} in dimension "
        f"{route.batch_dim} (shape {tuple(x.shape)}); pass route(..., batch_dim=N) where N is the "
        "dimension that holds the rows"
    )


KeepOffFastPath = Callable[[nn.Module, tuple[object, ...]], None]


def keep_off_fast_path(module: nn.Module, args: tuple[object, ...]) -> None:
    """A no-op forward pre-hook: PyTorch's fused transformer fast path (which reads the layers'
    weights itself, skipping adapters) is never taken while a submodule has a hook."""

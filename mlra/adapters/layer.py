"""``LowRankLinear``: an ``nn.Linear`` with named low-rank adapters beside it.

    y = base(x) + Σ_name  weight_name · scaling_name · B_name A_name dropout_name(x)

The base layer stays untouched (``base_layer``), so its weights, flags and state-dict entries are
the user's own. Adapters live in ``ModuleDict``s keyed by name (PEFT's layout: ``lora_A.<name>``,
``lora_B.<name>``), each with its frozen :class:`AdapterSpec`.

Request-scoped behaviour — ``disabled`` and per-row ``route`` — is read from a ``ContextVar``, so
threads and asyncio tasks that share one model never see each other's setting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

from mlra.adapters.spec import AdapterSpec
from mlra.errors import ConfigError, MergeError

__all__ = ["DISABLED", "LayerRoute", "LowRankLinear", "overrides"]


@dataclass(frozen=True)
class LayerRoute:
    """Row routing for one layer: row ``i`` uses ``names[index[i]]``; ``index[i] == len(names)``
    means the base alone (no adapter, or an adapter this layer does not carry)."""

    names: tuple[str, ...]
    index: torch.Tensor  # [batch], int64, on the layer's device


class _Disabled:
    def __repr__(self) -> str:
        return "DISABLED"


DISABLED: Final = _Disabled()

# id(layer) -> what this request asks of that layer. Empty outside ``disabled``/``route`` blocks.
Overrides = Mapping[int, LayerRoute | _Disabled]
overrides: ContextVar[Overrides] = ContextVar("mlra_overrides", default=MappingProxyType({}))


class LowRankLinear(nn.Module):
    """Wraps one ``nn.Linear``; holds any number of named adapters for it."""

    def __init__(self, base_layer: nn.Linear) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.specs: dict[str, AdapterSpec] = {}
        self.active: dict[str, float] = {}  # the model's active adapters and their weights
        self.merged: dict[str, float] = {}  # what is merged into base_layer.weight right now
        self._unmerged_weight: torch.Tensor | None = None  # the exact base weight while merged

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def extra_repr(self) -> str:
        return f"adapters={list(self.specs)}, active={self.active}, merged={bool(self.merged)}"

    # -- adapters -------------------------------------------------------------------------------

    def A(self, name: str) -> nn.Linear:
        layer = self.lora_A[name]
        assert isinstance(layer, nn.Linear)
        return layer

    def B(self, name: str) -> nn.Linear:
        layer = self.lora_B[name]
        assert isinstance(layer, nn.Linear)
        return layer

    def add(self, name: str, spec: AdapterSpec) -> None:
        """Create adapter ``name``: A (rank × in), B (out × rank), like the base weight."""
        weight = self.base_layer.weight
        factory = {"device": weight.device, "dtype": weight.dtype}
        a = nn.Linear(self.in_features, spec.rank, bias=False, **factory)
        b = nn.Linear(spec.rank, self.out_features, bias=False, **factory)
        with torch.no_grad():
            if spec.init == "gaussian":
                nn.init.normal_(a.weight, std=1.0 / spec.rank)
            else:  # "lora": A as nn.Linear initialises it
                nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
            nn.init.zeros_(b.weight)
        dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        for container, module in ((self.lora_A, a), (self.lora_B, b), (self.lora_dropout, dropout)):
            container[name] = module.train(self.training)  # a model in eval mode stays so
        self.specs[name] = spec

    def remove(self, name: str) -> None:
        for container in (self.lora_A, self.lora_B, self.lora_dropout):
            del container[name]
        del self.specs[name]
        self.active.pop(name, None)

    # -- merging --------------------------------------------------------------------------------

    def delta_weight(self, weights: dict[str, float]) -> torch.Tensor:
        """Σ weight · scaling · B A over ``weights``, in float32 (out × in)."""
        delta = torch.zeros(
            self.out_features, self.in_features, dtype=torch.float32, device=self.base_weight.device
        )
        for name, w in weights.items():
            b, a = self.B(name).weight.float(), self.A(name).weight.float()
            delta.addmm_(b, a, alpha=w * self.specs[name].scaling)
        return delta

    @property
    def base_weight(self) -> torch.Tensor:
        """The base layer's own weight, also while an adapter is merged into it."""
        if self._unmerged_weight is not None:
            return self._unmerged_weight
        return self.base_layer.weight.detach()

    def merge_plan(self) -> tuple[dict[str, float], torch.Tensor] | None:
        """What ``merge`` would write: the active adapters this layer carries and the new weight.

        Computed in float32 and cast once, so a merge in bf16/fp16 rounds once, not per adapter.
        Nothing is changed; the caller checks the result of every layer before committing any.
        """
        weights = {n: w for n, w in self.active.items() if n in self.specs}
        if self.merged or not weights:
            return None
        base = self.base_layer.weight.detach()
        return weights, (base.float() + self.delta_weight(weights)).to(base.dtype)

    def commit_merge(self, weights: dict[str, float], merged_weight: torch.Tensor) -> None:
        weight = self.base_layer.weight
        self._unmerged_weight = weight.detach().clone()
        with torch.no_grad():
            weight.copy_(merged_weight)  # in place: optimisers and hooks keep their reference
        self.merged = weights

    def unmerge(self) -> None:
        """Put the exact base weight back (a copy kept at merge time, not a subtraction)."""
        if self._unmerged_weight is None:
            return
        with torch.no_grad():
            self.base_layer.weight.copy_(self._unmerged_weight)
        self._unmerged_weight = None
        self.merged = {}

    # -- forward --------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        override = overrides.get().get(id(self))
        if self.merged and override is not None:
            raise MergeError(
                "adapters are merged into the base weights; call mlra.unmerge(model) before "
                "using disabled() or route()"
            )
        result: torch.Tensor = self.base_layer(x)
        if self.merged or override is DISABLED:
            return result
        if isinstance(override, LayerRoute):
            return result + self._routed(x, override).to(result.dtype)
        for name, w in self.active.items():
            if name not in self.specs:
                continue  # an active adapter that does not cover this layer
            a, b = self.A(name), self.B(name)
            h = self.lora_dropout[name](x.to(a.weight.dtype))
            result = result + (b(a(h)) * (w * self.specs[name].scaling)).to(result.dtype)
        return result

    def _routed(self, x: torch.Tensor, route: LayerRoute) -> torch.Tensor:
        """Every row through its own adapter in two batched matmuls (no loop over rows)."""
        batch = x.shape[0]
        if route.index.shape[0] != batch:
            raise ConfigError(
                f"route() was given {route.index.shape[0]} rows but a layer received a batch of "
                f"{batch} (shape {tuple(x.shape)}); route() needs the batch as the first dimension"
            )
        if not route.names:
            return torch.zeros((), dtype=x.dtype, device=x.device)
        rank = max(self.specs[n].rank for n in route.names)
        dtype = self.A(route.names[0]).weight.dtype
        # Stack every used adapter, rank-padded with zeros, plus an all-zero one for "base only".
        a_all = torch.stack(
            [F.pad(self.A(n).weight, (0, 0, 0, rank - self.specs[n].rank)) for n in route.names]
            + [x.new_zeros(rank, self.in_features, dtype=dtype)]
        )  # [K+1, r, in]
        b_all = torch.stack(
            [
                F.pad(self.B(n).weight * self.specs[n].scaling, (0, rank - self.specs[n].rank))
                for n in route.names
            ]
            + [x.new_zeros(self.out_features, rank, dtype=dtype)]
        )  # [K+1, out, r]
        rows = x.reshape(batch, -1, self.in_features).to(dtype)  # [batch, tokens, in]
        if self.training:
            p = torch.tensor(
                [self.specs[n].dropout for n in route.names] + [0.0], device=x.device, dtype=dtype
            )[route.index].view(batch, 1, 1)
            keep = torch.bernoulli((1 - p).expand_as(rows))
            rows = rows * keep / (1 - p)
        h = torch.bmm(rows, a_all[route.index].transpose(1, 2))  # [batch, tokens, r]
        out = torch.bmm(h, b_all[route.index].transpose(1, 2))  # [batch, tokens, out]
        return out.reshape(*x.shape[:-1], self.out_features)

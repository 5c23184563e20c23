"""Linear kinds: ``nn.Linear`` and transformers' ``Conv1D`` (GPT-2's ``c_attn``, ``c_proj``).

Both compute ``x W + b`` over the last dimension, so A is ``nn.Linear(in, r)`` and B is
``nn.Linear(r, out)`` for both (PEFT's layout). ``Conv1D`` stores its weight as (in × out), the
transpose of ``nn.Linear``'s ("fan-in/fan-out"), so its merged delta is ``(B A)ᵀ``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlra.adapters.base import AdapterLayer, expand_rows, tensor_of
from mlra.adapters.fused import FusedLowRankLinear
from mlra.adapters.state import LayerRoute
from mlra.errors import ConfigError

__all__ = ["LowRankConv1D", "LowRankLinear", "is_hf_conv1d"]


def is_hf_conv1d(module: nn.Module) -> bool:
    """A transformers ``Conv1D`` (found by name: importing transformers costs seconds)."""
    cls = type(module)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")


class LowRankLinear(AdapterLayer):
    """Wraps one ``nn.Linear``; holds any number of named adapters for it."""

    kind = "linear"
    _stack_cache: tuple[object, torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def features(cls, base: nn.Module) -> tuple[int, int]:
        out_features, in_features = tensor_of(base).shape
        return int(in_features), int(out_features)

    @property
    def in_features(self) -> int:
        return self.features(self.base_layer)[0]

    @property
    def out_features(self) -> int:
        return self.features(self.base_layer)[1]

    def A(self, name: str) -> nn.Linear:
        layer = self.lora_A[name]
        assert isinstance(layer, nn.Linear)
        return layer

    def B(self, name: str) -> nn.Linear:
        layer = self.lora_B[name]
        assert isinstance(layer, nn.Linear)
        return layer

    def delta(self, name: str) -> torch.Tensor:
        return self.B(name).weight.float() @ self.A(name).weight.float()  # [out, in]

    def add_lowrank(
        self, out: torch.Tensor, x: torch.Tensor, name: str, coef: float
    ) -> torch.Tensor:
        """``out + coef · B h`` as one ``addmm`` (no separate scale and sum passes over the
        output) when the dtypes agree; else PEFT's order (fp32 adapter on a half base)."""
        a, b = self.A(name), self.B(name)
        h: torch.Tensor = a(self.lora_dropout[name](x.to(a.weight.dtype)))  # [..., r]
        if out.dtype != h.dtype or out.is_nested:  # (nested: nn.TransformerEncoder's padding)
            low: torch.Tensor = b(h)
            return out + low * coef
        flat = torch.addmm(out.reshape(-1, out.shape[-1]), h.reshape(-1, h.shape[-1]), b.weight.T,
                           alpha=coef)  # fmt: skip
        return flat.view(out.shape)

    def fused(self, x: torch.Tensor) -> torch.Tensor | None:
        """A training step through the base and one adapter as one autograd node (fused.py):
        only for a plain ``nn.Linear`` without hooks (its forward is not called), one active
        adapter without dropout, one dtype, no autocast and no compile (Inductor fuses itself)."""
        base = self.base_layer
        if (
            not torch.is_grad_enabled()
            or torch.compiler.is_compiling()
            or type(base) is not nn.Linear
            or _hooked(base)
            or x.is_nested
            or x.dim() < 2
            or torch.is_autocast_enabled(x.device.type)
        ):
            return None
        active = [(n, w) for n, w in self.active.items() if n in self.specs]
        if len(active) != 1 or not isinstance(self.lora_dropout[active[0][0]], nn.Identity):
            return None
        name, w = active[0]
        a, b = self.a_weight(name), self.b_weight(name)
        if not x.dtype == base.weight.dtype == a.dtype:
            return None
        out: torch.Tensor = FusedLowRankLinear.apply(  # type: ignore[no-untyped-call]
            x, base.weight, base.bias, a, b, w * self.scaling[name]
        )
        return out

    def routed(self, x: torch.Tensor, route: LayerRoute) -> torch.Tensor:
        """Every row through its own adapter in two batched matmuls (no loop over rows)."""
        index = expand_rows(route, x)
        if not route.names:
            return torch.zeros((), dtype=x.dtype, device=x.device)
        if route.batch_dim >= x.dim() - 1:
            raise ConfigError(
                f"route(batch_dim={route.batch_dim}) names the feature dimension of an input of "
                f"shape {tuple(x.shape)}"
            )
        n_in, n_out = self.in_features, self.out_features
        a_all, b_all = self._stacks(route.names)
        dtype = a_all.dtype
        moved = x.movedim(route.batch_dim, 0)
        rows = self._dropped(moved.to(dtype), route, index)
        rows = rows.reshape(moved.shape[0], -1, n_in)  # [batch, tokens, in]
        h = torch.bmm(rows, a_all[index].transpose(1, 2))  # [batch, tokens, r]
        out = torch.bmm(h, b_all[index].transpose(1, 2))  # [batch, tokens, out]
        return out.reshape(*moved.shape[:-1], n_out).movedim(0, route.batch_dim)

    def _stacks(self, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every adapter of the route stacked (rank-padded with zeros), plus an all-zero one for
        "base only": A [K+1, r, in], scaled B [K+1, out, r]. Kept between forwards without
        autograd (generation: one forward per token) until a weight changes in place."""
        weights = [(self.a_weight(n), self.b_weight(n)) for n in names]
        key: object = None
        if not torch.compiler.is_compiling() and not torch.is_grad_enabled():
            key = (names, [(t.data_ptr(), t._version) for pair in weights for t in pair])
            if self._stack_cache is not None and self._stack_cache[0] == key:
                return self._stack_cache[1], self._stack_cache[2]
        rank = max(self.specs[n].rank for n in names)
        a0 = weights[0][0]
        a_all = torch.stack(
            [F.pad(a, (0, 0, 0, rank - a.shape[0])) for a, _ in weights]
            + [a0.new_zeros(rank, a0.shape[1])]
        )  # [K+1, r, in]
        b_all = torch.stack(
            [
                F.pad(b * self.scaling[n], (0, rank - b.shape[1]))
                for n, (_, b) in zip(names, weights, strict=True)
            ]
            + [a0.new_zeros(weights[0][1].shape[0], rank)]
        )  # [K+1, out, r]
        self._stack_cache = (key, a_all, b_all) if key is not None else None
        return a_all, b_all

    def _dropped(self, rows: torch.Tensor, route: LayerRoute, index: torch.Tensor) -> torch.Tensor:
        """Each row through its own adapter's dropout module (rows first)."""
        if not self.training:
            return rows
        used = [self.lora_dropout[n] for n in route.names]
        if all(isinstance(d, nn.Identity) for d in used):
            return rows
        out = rows
        shape = [-1] + [1] * (rows.dim() - 1)
        for k, dropout in enumerate(used):
            out = torch.where((index == k).view(shape), dropout(rows), out)
        return out


def _hooked(module: nn.Module) -> bool:
    """Whether calling ``module`` would run hooks (its own or global ones) besides forward."""
    own = module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
    glob = nn.modules.module
    return bool(
        own
        or module._backward_pre_hooks
        or glob._global_forward_hooks
        or glob._global_forward_pre_hooks
        or glob._global_backward_hooks
        or glob._global_backward_pre_hooks
    )


class LowRankConv1D(LowRankLinear):
    """Wraps one transformers ``Conv1D`` (weight stored in × out)."""

    kind = "conv1d_hf"

    @classmethod
    def features(cls, base: nn.Module) -> tuple[int, int]:
        in_features, out_features = tensor_of(base).shape
        return int(in_features), int(out_features)

    def delta(self, name: str) -> torch.Tensor:
        return super().delta(name).T  # [in, out], like Conv1D's weight

"""Attention kind: ``nn.MultiheadAttention``, adapted as PEFT adapts it (in_proj and out_proj).

``nn.MultiheadAttention`` keeps its query/key/value projection as one parameter
(``in_proj_weight``, 3E × E) and hands ``out_proj.weight`` to its functional form itself, so
neither projection has a forward an adapter could wrap. One adapter on the attention therefore
adapts both, in PEFT's layout and tensor names: this layer holds the in_proj pair (A: r × E,
B: 3E × r) and wraps ``out_proj`` in a ``LowRankLinear`` (``<attention>.base_layer.out_proj``)
that holds the out_proj pair, which merges, unmerges, saves and loads like any layer.

The forward is the attention's own ``forward`` run with the adapted weights
``W + Σ weight · scaling · B A`` in place of its own, through a per-call view (the module is never
changed, so concurrent requests are safe). That is what PEFT computes by merging before each
forward, so both give the same numbers, fused eval fast path included; as in PEFT, LoRA dropout
does not apply here. ``route`` runs each adapter's rows with that adapter's weights.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from mlra.adapters.base import AdapterLayer, expand_rows, tensor_of
from mlra.adapters.linear import LowRankLinear
from mlra.adapters.spec import AdapterSpec
from mlra.adapters.state import DISABLED, LayerRoute
from mlra.errors import ConfigError

__all__ = ["LowRankMultiheadAttention", "attention_refusal"]

Output = tuple[Tensor, Tensor | None]


def attention_refusal(attention: nn.MultiheadAttention) -> str | None:
    """Why an attention cannot carry an adapter here, or None (PEFT refuses the same)."""
    if not attention._qkv_same_embed_dim or attention.in_proj_weight is None:
        return (
            f"its key/value sizes (kdim={attention.kdim}, vdim={attention.vdim}) differ from "
            f"embed_dim={attention.embed_dim}, so q, k and v have separate weights (not supported)"
        )
    if not isinstance(attention.out_proj, nn.Linear | LowRankLinear):  # (wrapped: not yet/already)
        return f"its out_proj is a {type(attention.out_proj).__name__}, not an nn.Linear"
    return None


def _attention_attr(name: str) -> Any:
    return property(lambda self: getattr(self.base_layer, name), doc=f"The attention's ``{name}``.")


class _Projection:
    """An adapted ``out_proj``: the weight and bias that the attention's forward reads."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        self.weight, self.bias = weight, bias


class _AdaptedView:
    """What ``nn.MultiheadAttention.forward`` reads of its module: the wrapped attention's own
    attributes, except the adapted ``in_proj_weight`` and ``out_proj``."""

    def __init__(self, attention: nn.Module, in_proj_weight: Tensor, out_proj: object) -> None:
        self._attention = attention
        self.in_proj_weight = in_proj_weight
        self.out_proj = out_proj

    def __getattr__(self, name: str) -> Any:
        return getattr(self._attention, name)


class LowRankMultiheadAttention(AdapterLayer):
    """Wraps one ``nn.MultiheadAttention``; holds any number of named adapters for it."""

    kind = "attention"

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        setattr(base_layer, "out_proj", LowRankLinear(self.attention.out_proj))  # noqa: B010

    # what code that reads the attention's attributes (nn.TransformerEncoderLayer) finds
    embed_dim = _attention_attr("embed_dim")
    kdim = _attention_attr("kdim")
    vdim = _attention_attr("vdim")
    num_heads = _attention_attr("num_heads")
    head_dim = _attention_attr("head_dim")
    dropout = _attention_attr("dropout")
    batch_first = _attention_attr("batch_first")
    _qkv_same_embed_dim = _attention_attr("_qkv_same_embed_dim")
    in_proj_weight = _attention_attr("in_proj_weight")
    in_proj_bias = _attention_attr("in_proj_bias")
    bias_k = _attention_attr("bias_k")
    bias_v = _attention_attr("bias_v")
    add_zero_attn = _attention_attr("add_zero_attn")
    out_proj = _attention_attr("out_proj")  # the LowRankLinear: .weight/.bias are the base's

    @property
    def attention(self) -> nn.MultiheadAttention:
        base = self.base_layer
        assert isinstance(base, nn.MultiheadAttention)
        return base

    @property
    def out_layer(self) -> LowRankLinear:
        """The adapted ``out_proj`` (its adapters are this layer's, under the same names)."""
        layer = self.attention.out_proj
        assert isinstance(layer, LowRankLinear)
        return layer

    @classmethod
    def features(cls, base: nn.Module) -> tuple[int, int]:
        out_features, in_features = tensor_of(base, "in_proj_weight").shape  # [3E, E]
        return int(in_features), int(out_features)

    @classmethod
    def base_tensors(cls, base: nn.Module) -> dict[str, Tensor]:
        tensors = {"weight": tensor_of(base, "in_proj_weight")}
        if isinstance(getattr(base, "in_proj_bias", None), Tensor):
            tensors["bias"] = tensor_of(base, "in_proj_bias")
        return tensors

    @property
    def weight(self) -> Tensor:
        """The attention's ``in_proj_weight`` (merged adapters included while merged)."""
        return tensor_of(self.base_layer, "in_proj_weight")

    @property
    def bias(self) -> Tensor | None:
        bias: Tensor | None = self.attention.in_proj_bias
        return bias

    def delta(self, name: str) -> Tensor:
        return self.b_weight(name).float() @ self.a_weight(name).float()  # [3E, E]

    def add(self, name: str, spec: AdapterSpec, dtype: torch.dtype) -> None:
        super().add(name, spec, dtype)
        if spec.dropout > 0:
            warnings.warn(
                f"adapter {name!r}: nn.MultiheadAttention computes with its (adapted) weights, so "
                f"dropout={spec.dropout} does not apply to its adapter (as in PEFT)",
                stacklevel=4,
            )

    # -- forward --------------------------------------------------------------------------------

    def forward(  # type: ignore[override]  # nn.MultiheadAttention's signature
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> Output:
        options: dict[str, Any] = {
            "key_padding_mask": key_padding_mask, "need_weights": need_weights,
            "attn_mask": attn_mask, "average_attn_weights": average_attn_weights,
            "is_causal": is_causal,
        }  # fmt: skip
        request = self._checked_request()
        if self.merged or request is DISABLED:
            return self.base_layer(query, key, value, **options)  # type: ignore[no-any-return]
        if isinstance(request, LayerRoute):
            return self._routed(request, query, key, value, options)
        weights = {n: w for n, w in self.active.items() if n in self.specs}
        return self._attend(weights, query, key, value, options)

    def _adapted(self, weights: dict[str, float]) -> tuple[Tensor, Tensor]:
        """in_proj and out_proj weights with ``weights``' adapters added, as PEFT merges them:
        ``W + (scaling · B A).to(W.dtype)``, one adapter after the other."""
        out_layer = self.out_layer
        w_in, w_out = self.weight, out_layer.weight
        for name, w in weights.items():
            w_in = w_in + (self.delta(name) * (w * self.scaling[name])).to(w_in.dtype)
            w_out = w_out + (out_layer.delta(name) * (w * out_layer.scaling[name])).to(w_out.dtype)
        return w_in, w_out

    def _attend(
        self, weights: dict[str, float], q: Tensor, k: Tensor, v: Tensor, options: dict[str, Any]
    ) -> Output:
        attention = self.attention
        if not weights:
            return attention(q, k, v, **options)  # type: ignore[no-any-return]
        if attention._forward_hooks or attention._forward_pre_hooks:
            raise ConfigError(
                "the wrapped nn.MultiheadAttention has forward hooks, which its adapted forward "
                "would skip; register them on the adapter layer (its parent) instead"
            )
        w_in, w_out = self._adapted(weights)
        out_proj = _Projection(w_out, self.out_layer.bias)
        view: Any = _AdaptedView(attention, w_in, out_proj)
        return type(attention).forward(view, q, k, v, **options)

    def _routed(
        self, route: LayerRoute, q: Tensor, k: Tensor, v: Tensor, options: dict[str, Any]
    ) -> Output:
        """Each adapter's rows (and the base's) through the attention with its own weights."""
        dim = 0 if self.attention.batch_first else 1
        if q.dim() != 3 or route.batch_dim != dim:
            raise ConfigError(
                f"route(batch_dim={route.batch_dim}) but this nn.MultiheadAttention (batch_first="
                f"{self.attention.batch_first}) got query of shape {tuple(q.shape)}; route needs "
                f"batched input with the rows in dimension {dim} (pass batch_dim={dim})"
            )
        index = expand_rows(route, q)
        out: Tensor | None = None
        attn: Tensor | None = None
        for group in sorted(set(index.tolist())):
            rows = (index == group).nonzero().flatten()
            weights = {route.names[group]: 1.0} if group < len(route.names) else {}
            sq, sk, sv = _rows_of((q, k, v), rows, dim)
            o, a = self._attend(weights, sq, sk, sv, _masks_of(options, rows, q.shape[dim]))
            if out is None:
                out = o.new_zeros(*q.shape[:-1], o.shape[-1])
            out = out.index_copy(dim, rows, o)
            if a is not None:
                attn = a.new_zeros(q.shape[dim], *a.shape[1:]) if attn is None else attn
                attn = attn.index_copy(0, rows, a)
        assert out is not None
        return out, attn


def _rows_of(
    qkv: tuple[Tensor, Tensor, Tensor], rows: Tensor, dim: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The rows of query, key and value, keeping which of them are the same tensor (the
    attention projects self-attention input once)."""
    q, k, v = qkv
    sq = q.index_select(dim, rows)
    sk = sq if k is q else k.index_select(dim, rows)
    sv = sk if v is k else sq if v is q else v.index_select(dim, rows)
    return sq, sk, sv


def _masks_of(options: dict[str, Any], rows: Tensor, batch: int) -> dict[str, Any]:
    """The masks of ``options`` for ``rows`` only (a 3-D ``attn_mask`` holds one mask per row and
    head, ``[batch · heads, L, S]``)."""
    kept = dict(options)
    padding, mask = options["key_padding_mask"], options["attn_mask"]
    if padding is not None:
        kept["key_padding_mask"] = padding.index_select(0, rows)
    if mask is not None and mask.dim() == 3:
        per_row = mask.reshape(batch, -1, *mask.shape[1:])  # [batch, heads, L, S]
        kept["attn_mask"] = per_row.index_select(0, rows).flatten(0, 1)
    return kept

"""Low-rank adapters: the layer kinds, target matching, and the whole-model API."""

from mlra.adapters.attention import LowRankMultiheadAttention
from mlra.adapters.base import AdapterLayer
from mlra.adapters.conv import LowRankConv
from mlra.adapters.embedding import LowRankEmbedding
from mlra.adapters.fingerprint import fingerprint, module_digests
from mlra.adapters.linear import LowRankConv1D, LowRankLinear
from mlra.adapters.model import (
    active_adapters,
    adapter_modules,
    adapter_names,
    adapter_parameters,
    adapter_spec,
    add_adapter,
    is_merged,
    lowrank_layers,
    mark_trainable,
    merge,
    remove_adapter,
    reset_adapter_parameters,
    set_active,
    unload,
    unmerge,
)
from mlra.adapters.requests import disabled, route
from mlra.adapters.spec import AdapterSpec

__all__ = [
    "AdapterLayer",
    "AdapterSpec",
    "LowRankConv",
    "LowRankConv1D",
    "LowRankEmbedding",
    "LowRankLinear",
    "LowRankMultiheadAttention",
    "active_adapters",
    "adapter_modules",
    "adapter_names",
    "adapter_parameters",
    "adapter_spec",
    "add_adapter",
    "disabled",
    "fingerprint",
    "is_merged",
    "lowrank_layers",
    "mark_trainable",
    "merge",
    "module_digests",
    "remove_adapter",
    "reset_adapter_parameters",
    "route",
    "set_active",
    "unload",
    "unmerge",
]

"""Low-rank adapters: the layer, target matching, and the whole-model API."""

from mlra.adapters.fingerprint import fingerprint, module_digests
from mlra.adapters.layer import LowRankLinear
from mlra.adapters.model import (
    active_adapters,
    adapter_modules,
    adapter_names,
    adapter_parameters,
    adapter_spec,
    add_adapter,
    disabled,
    is_merged,
    lowrank_layers,
    mark_trainable,
    merge,
    remove_adapter,
    route,
    set_active,
    unload,
    unmerge,
)
from mlra.adapters.spec import AdapterSpec

__all__ = [
    "AdapterSpec",
    "LowRankLinear",
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
    "route",
    "set_active",
    "unload",
    "unmerge",
]

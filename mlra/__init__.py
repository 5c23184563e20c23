"""mlra: modular low-rank adapters for any PyTorch model, and an auditable retraining pipeline.

The library surface (see README.md and DESIGN.md): inject adapters into chosen layers
(``nn.Linear``, GPT-2's ``Conv1D``, convolutions, embeddings), hold many named adapters,
switch/weight/compose them, route each row of a batch to its own adapter, merge and unmerge
exactly, and save each adapter as a hashed, PEFT-compatible artifact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AdapterLayer",
    "AdapterSpec",
    "LowRankLinear",
    "__version__",
    "active_adapters",
    "adapter_names",
    "adapter_parameters",
    "adapter_spec",
    "add_adapter",
    "disabled",
    "fingerprint",
    "inspect_adapter",
    "is_merged",
    "load_adapter",
    "mark_trainable",
    "merge",
    "remove_adapter",
    "reset_adapter_parameters",
    "route",
    "save_adapter",
    "set_active",
    "unload",
    "unmerge",
]

# The library pulls in torch (~3 s): resolve names on first use, so that `mlra --help` and the
# data commands start fast (PEP 562).
_ARTIFACT_API = {"inspect_adapter", "load_adapter", "save_adapter"}

if TYPE_CHECKING:
    from mlra.adapters import (
        AdapterLayer,
        AdapterSpec,
        LowRankLinear,
        active_adapters,
        adapter_names,
        adapter_parameters,
        adapter_spec,
        add_adapter,
        disabled,
        fingerprint,
        is_merged,
        mark_trainable,
        merge,
        remove_adapter,
        reset_adapter_parameters,
        route,
        set_active,
        unload,
        unmerge,
    )
    from mlra.artifact import inspect_adapter, load_adapter, save_adapter


def __getattr__(name: str) -> Any:
    if name in _ARTIFACT_API:
        from mlra import artifact

        return getattr(artifact, name)
    if name in __all__:
        from mlra import adapters

        return getattr(adapters, name)
    raise AttributeError(f"module 'mlra' has no attribute {name!r}")

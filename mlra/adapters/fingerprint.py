"""Identify a base model by the weights that adapters touch.

An adapter's low-rank update only means something on top of the exact base weights it was trained
against. The fingerprint hashes, for every targeted layer, the parameter names, shapes, dtypes and
raw bytes of its *base* weights (also while an adapter is merged into them), so it is the same in
every process and on every device, and an artifact can refuse a different base model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TypedDict

import torch
from torch import nn

from mlra.adapters.base import AdapterLayer
from mlra.adapters.kinds import adapter_class
from mlra.adapters.model import adapter_modules, lowrank_layers
from mlra.errors import ConfigError, TargetNotFoundError

__all__ = ["ModuleDigest", "combine", "fingerprint", "module_digests"]


class ModuleDigest(TypedDict):
    sha256: str
    dtype: str
    shape: list[int]


def _tensor_bytes(t: torch.Tensor) -> bytes:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def _base_tensors(name: str, module: nn.Module) -> dict[str, torch.Tensor]:
    kind = adapter_class(module)
    if isinstance(module, AdapterLayer):
        tensors = type(module).base_tensors(module.base_layer) | {"weight": module.base_weight}
    elif kind is not None:
        tensors = kind.base_tensors(module)
    else:
        raise TargetNotFoundError(f"{name!r} is a {type(module).__name__}, not an adaptable layer")
    for key, t in tensors.items():
        if t.is_meta:
            raise ConfigError(
                f"{name}.{key} is on the meta device (no values to hash or save); materialise "
                "the model first (load its weights, or to_empty() and initialise them)"
            )
    return tensors


def module_digests(model: nn.Module, names: Iterable[str]) -> dict[str, ModuleDigest]:
    """Per-module digests of the base weights of the named adaptable modules."""
    digests: dict[str, ModuleDigest] = {}
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError as exc:
            raise TargetNotFoundError(f"the model has no module {name!r}") from exc
        h = hashlib.sha256()
        tensors = _base_tensors(name, module)
        for key, t in tensors.items():
            h.update(f"{key}|{tuple(t.shape)}|{t.dtype}|".encode())
            h.update(_tensor_bytes(t))
        weight = tensors["weight"]
        digests[name] = {
            "sha256": h.hexdigest(),
            "dtype": str(weight.dtype).removeprefix("torch."),
            "shape": list(weight.shape),
        }
    return digests


def combine(digests: dict[str, ModuleDigest]) -> str:
    """One hex sha256 over per-module digests (order-independent: sorted by module name)."""
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(f"{name}={digests[name]['sha256']};".encode())
    return h.hexdigest()


def fingerprint(model: nn.Module, name: str | None = None) -> str:
    """Hex sha256 over the base weights that adapter ``name`` (default: any adapter) touches."""
    layers = lowrank_layers(model) if name is None else adapter_modules(model, name)
    if not layers:
        raise TargetNotFoundError("the model carries no adapter, so no weights to fingerprint")
    return combine(module_digests(model, layers))

"""Request-scoped adapter settings: ``disabled()`` and per-row ``route()``.

Eager forwards read them from a ``ContextVar``, so threads and asyncio tasks that share one model
never see each other's setting. ``torch.compile`` cannot trace a ``ContextVar`` (a graph break per
layer), and ``nn.DataParallel`` replicas run in fresh threads that do not see it: both read the
same setting from a plain attribute of each layer instead, which the context managers also set.
That attribute belongs to the model, not to a thread: while blocks of two threads are open on
one model a layer refuses it (a replica raises; under compile Dynamo falls back to running the
frame eagerly, where the ContextVar gives each thread its own setting).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import torch

__all__ = ["DISABLED", "LayerRoute", "Overrides", "Request", "new_key", "overrides"]


@dataclass(frozen=True, eq=False)
class LayerRoute:
    """Row routing for one layer: row ``i`` uses ``names[index[i]]``; ``index[i] == len(names)``
    means the base alone (no adapter, or an adapter this layer does not carry). ``batch_dim`` is
    the input dimension that holds the rows."""

    names: tuple[str, ...]
    index: torch.Tensor  # [rows], int64, on the layer's device
    batch_dim: int = 0


class _Disabled:
    def __repr__(self) -> str:
        return "DISABLED"


DISABLED: Final = _Disabled()
Request = LayerRoute | _Disabled

# layer key -> what this request asks of that layer. Empty outside ``disabled``/``route`` blocks.
Overrides = Mapping[int, Request]
overrides: ContextVar[Overrides] = ContextVar("mlra_overrides", default=MappingProxyType({}))

_keys = itertools.count()


def new_key() -> int:
    """A key per adapter layer that, unlike ``id()``, its ``DataParallel`` replicas share."""
    return next(_keys)

"""Request-scoped settings over a whole model: ``disabled`` and per-row ``route``.

Each block sets its setting for this thread/task (a ``ContextVar``) and on every adapter layer
(for compiled and DataParallel forwards; see mlra.adapters.state), and undoes both on exit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType

import torch
from torch import nn

from mlra.adapters.base import AdapterLayer
from mlra.adapters.model import _check_known, _refuse_if_merged, lowrank_layers
from mlra.adapters.state import DISABLED, LayerRoute, Request, overrides
from mlra.errors import ConfigError

__all__ = ["disabled", "route"]

_tokens = itertools.count()


@contextmanager
def _override(layers: Mapping[str, AdapterLayer], value: Mapping[str, Request]) -> Iterator[None]:
    """Set ``value`` (per layer name) for this thread/task, and on each layer for compiled and
    DataParallel forwards (see mlra.adapters.state)."""
    token = next(_tokens)
    keyed = {layers[n]._key: v for n, v in value.items()}
    ctx = overrides.set(MappingProxyType({**overrides.get(), **keyed}))
    for n, v in value.items():
        layers[n].hold(token, v)
    try:
        yield
    finally:
        for n in value:
            layers[n].release(token)
        overrides.reset(ctx)


@contextmanager
def disabled(model: nn.Module) -> Iterator[None]:
    """Inside the block, ``model`` computes exactly its base output (this thread/task only)."""
    _refuse_if_merged(model, "disable adapters")
    layers = lowrank_layers(model)
    with _override(layers, dict.fromkeys(layers, DISABLED)):
        yield


@contextmanager
def route(model: nn.Module, rows: Sequence[str | None], *, batch_dim: int = 0) -> Iterator[None]:
    """Inside the block, row ``i`` of each batch uses adapter ``rows[i]`` (``None``: the base).

    ``batch_dim`` is the dimension of every adapted layer's input that holds the rows (1 for a
    sequence-first model); each layer checks its input against it. A batch that is k times
    ``len(rows)`` is generation that expanded every row k times in place (beam search,
    ``num_return_sequences``), so row ``i``'s adapter serves its k copies. Request-scoped: the
    routing belongs to this thread or asyncio task only.
    """
    rows = list(rows)
    if not rows:
        raise ConfigError("route() needs one adapter name (or None) per row, got an empty list")
    if isinstance(batch_dim, bool) or not isinstance(batch_dim, int) or batch_dim < 0:
        raise ConfigError(f"batch_dim must be a non-negative integer, got {batch_dim!r}")
    _check_known(model, sorted({r for r in rows if r is not None}))
    _refuse_if_merged(model, "route rows")
    layers = lowrank_layers(model)
    _check_batch_layout(model, layers, batch_dim)
    plans: dict[str, Request] = {}
    for full_name, layer in layers.items():
        names = tuple(layer.specs)  # all of them, in a fixed order: one compiled graph per layer
        index = [names.index(r) if r in names else len(names) for r in rows]
        device = layer.weight.device
        plans[full_name] = LayerRoute(
            names, torch.tensor(index, dtype=torch.long, device=device), batch_dim
        )
    with _override(layers, plans):
        yield


def _check_batch_layout(
    model: nn.Module, layers: Mapping[str, AdapterLayer], batch_dim: int
) -> None:
    """Refuse a ``batch_dim`` that the modules beside an adapted layer say is wrong (a
    ``batch_first`` attention or recurrent layer under the same parent): a sequence-first layer
    whose sequence length equals the number of rows would otherwise be routed by position."""
    parents = {name.rpartition(".")[0] for name in layers}
    for name, module in model.named_modules():
        first = getattr(module, "batch_first", None)
        near = any(not p or name == p or name.startswith(p + ".") for p in parents)
        if near and isinstance(first, bool) and (0 if first else 1) != batch_dim:
            raise ConfigError(
                f"route(batch_dim={batch_dim}) but {name or 'the model'!r} "
                f"({type(module).__name__}) beside the adapted layers has batch_first={first}, "
                f"so the rows are in dimension {0 if first else 1}; pass "
                f"batch_dim={0 if first else 1}"
            )

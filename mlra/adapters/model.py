"""The adapter API over a whole model: plain functions that change the user's model in place.

State lives in the ``AdapterLayer`` layers themselves (which adapters each carries, which are
active, what is merged); everything model-wide is derived from them, so there is no second copy
that could drift.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mlra.adapters.base import AdapterLayer, keep_off_fast_path
from mlra.adapters.kinds import wrap
from mlra.adapters.spec import AdapterSpec
from mlra.adapters.targets import resolve_targets
from mlra.errors import AdapterExistsError, AdapterNotFoundError, ConfigError, MergeError

__all__ = [
    "active_adapters",
    "adapter_modules",
    "adapter_names",
    "adapter_parameters",
    "adapter_spec",
    "add_adapter",
    "is_merged",
    "lowrank_layers",
    "mark_trainable",
    "merge",
    "remove_adapter",
    "reset_adapter_parameters",
    "set_active",
    "unload",
    "unmerge",
]

Active = str | Sequence[str] | Mapping[str, float]

# model -> (adapters made trainable, every parameter's requires_grad before that), so that removing
# the trained adapter (or unloading) gives the base model its own flags back.
_saved_flags: weakref.WeakKeyDictionary[nn.Module, tuple[set[str], list[tuple[nn.Parameter, bool]]]]
_saved_flags = weakref.WeakKeyDictionary()


def lowrank_layers(model: nn.Module) -> dict[str, AdapterLayer]:
    """Every adapter-carrying layer of ``model`` by its full module name, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, AdapterLayer)}


def adapter_names(model: nn.Module) -> list[str]:
    """The names of the adapters on ``model``, in the order they were added."""
    names: dict[str, None] = {}
    for layer in lowrank_layers(model).values():
        names.update(dict.fromkeys(layer.specs))
    return list(names)


def _check_known(model: nn.Module, names: Sequence[str]) -> None:
    known = adapter_names(model)
    for name in names:
        if name not in known:
            raise AdapterNotFoundError(
                f"no adapter named {name!r} on this model; it has: {', '.join(known) or '(none)'}"
            )


def adapter_modules(model: nn.Module, name: str) -> dict[str, AdapterLayer]:
    """The layers that carry adapter ``name``, by full module name (its resolved targets)."""
    _check_known(model, [name])
    return {n: m for n, m in lowrank_layers(model).items() if name in m.specs}


def adapter_spec(model: nn.Module, name: str) -> AdapterSpec:
    return next(iter(adapter_modules(model, name).values())).specs[name]


def is_merged(model: nn.Module) -> bool:
    return any(layer.merged for layer in lowrank_layers(model).values())


def _refuse_if_merged(model: nn.Module, doing: str) -> None:
    if is_merged(model):
        raise MergeError(
            f"cannot {doing} while adapters are merged; call mlra.unmerge(model) first"
        )


def add_adapter(
    model: nn.Module, name: str, spec: AdapterSpec, *, autocast_adapter_dtype: bool = True
) -> list[str]:
    """Add adapter ``name`` to every layer that ``spec.targets`` matches, in place.

    Returns the full names of the wrapped modules. The first adapter on a model becomes active;
    later ones wait for ``set_active``. On a float16/bfloat16 base the adapter's weights are
    float32 (as PEFT's ``autocast_adapter_dtype``); ``autocast_adapter_dtype=False`` keeps them
    in the base layer's dtype.
    """
    if not isinstance(spec, AdapterSpec):
        raise ConfigError(f"spec must be an mlra.AdapterSpec, got {type(spec).__name__}")
    if not isinstance(name, str) or not name or "." in name or not name.isprintable():
        raise ConfigError(
            f"adapter name must be a non-empty printable string without '.', got {name!r}"
        )
    if name in adapter_names(model):
        raise AdapterExistsError(f"an adapter named {name!r} is already on this model")
    _refuse_if_merged(model, f"add adapter {name!r}")
    targets = resolve_targets(model, spec)
    before = active_adapters(model)
    for full_name in targets:
        module = model.get_submodule(full_name)
        if not isinstance(module, AdapterLayer):
            module = wrap(module).train(module.training)  # follow the model's mode
            for layer in lowrank_layers(module).values():  # (an attention wraps its out_proj too)
                layer.active = dict(before)
            _replace(model, full_name, module)
        for layer in lowrank_layers(module).values():
            dtype = layer.weight.dtype
            if autocast_adapter_dtype and dtype in (torch.float16, torch.bfloat16):
                dtype = torch.float32
            layer.add(name, spec, dtype)
    if not before:
        set_active(model, name)
    return targets


def reset_adapter_parameters(model: nn.Module, name: str) -> None:
    """Initialise adapter ``name`` afresh (A random, B zero: the base output again).

    For a model built on the meta device and materialised with ``to_empty()``, whose adapter
    weights are uninitialised memory until this runs.
    """
    for layer in adapter_modules(model, name).values():
        if layer.a_weight(name).is_meta:
            raise ConfigError(
                f"adapter {name!r} is still on the meta device; call model.to_empty(device=...) "
                "first, then reset_adapter_parameters"
            )
        layer.reset(name)


def remove_adapter(model: nn.Module, name: str) -> None:
    """Delete adapter ``name``; a layer left with no adapter becomes its original module again."""
    layers = adapter_modules(model, name)
    _refuse_if_merged(model, f"remove adapter {name!r}")
    saved = _saved_flags.get(model)
    for full_name, layer in reversed(layers.items()):  # inner layers (out_proj) first
        layer.remove(name)
        if not layer.specs:
            _replace(model, full_name, layer.base_layer)
    for layer in lowrank_layers(model).values():
        layer.active.pop(name, None)
    if saved is not None and name in saved[0]:
        _restore_flags(model)
    if adapter_names(model) and not active_adapters(model):
        warnings.warn(
            f"removed the active adapter {name!r}; no adapter is active now, so the model "
            "computes the base output until mlra.set_active() is called",
            stacklevel=2,
        )


def unload(model: nn.Module, *, merge: bool = False) -> nn.Module:
    """Take every adapter off ``model``: the original modules, with their state-dict keys, return.

    With ``merge=True`` the active adapters are merged first and kept in the weights (a plain
    model for serving); otherwise the exact base weights are restored.
    """
    if merge:
        _merge(model)
    for full_name, layer in reversed(lowrank_layers(model).items()):  # inner layers first
        if not merge:
            layer.unmerge()
        _replace(model, full_name, layer.base_layer)
    _restore_flags(model)
    return model


def _replace(model: nn.Module, full_name: str, module: nn.Module) -> None:
    parent_name, _, child = full_name.rpartition(".")
    parent = model.get_submodule(parent_name)
    setattr(parent, child, module)
    if isinstance(module, AdapterLayer) and any(
        isinstance(m, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer)
        for n, m in model.named_modules()
        if full_name.startswith(n + ".") or not n
    ):
        # PyTorch's fused transformer fast path reads the weights itself and would skip the
        # adapter; it is never taken while a submodule has a forward hook.
        module.register_forward_pre_hook(keep_off_fast_path)


# -- which adapters compute -------------------------------------------------------------------


def _normalise_active(adapters: Active) -> dict[str, float]:
    if isinstance(adapters, str):
        return {adapters: 1.0}
    if isinstance(adapters, Mapping):
        weights = dict(adapters)
    elif isinstance(adapters, Sequence):
        if len(set(adapters)) != len(adapters):
            raise ConfigError(f"set_active was given a name twice: {list(adapters)!r}")
        weights = dict.fromkeys(adapters, 1.0)
    else:
        raise ConfigError(
            f"set_active takes a name, a list of names or a {{name: weight}} dict, "
            f"got {type(adapters).__name__}"
        )
    if not weights:
        raise ConfigError(
            "set_active was given no adapter; use `with mlra.disabled(model)` for the base model"
        )
    for name, w in weights.items():
        if not isinstance(name, str):
            raise ConfigError(f"adapter names are strings, got {name!r}")
        if (
            isinstance(w, bool)
            or not isinstance(w, int | float)
            or not torch.isfinite(torch.tensor(float(w)))
        ):
            raise ConfigError(f"weight of adapter {name!r} must be a finite number, got {w!r}")
    return {n: float(w) for n, w in weights.items()}


def set_active(model: nn.Module, adapters: Active) -> None:
    """Choose what computes: one adapter, several summed, or a ``{name: weight}`` mix."""
    weights = _normalise_active(adapters)
    _check_known(model, list(weights))
    _refuse_if_merged(model, "change the active adapters")
    for layer in lowrank_layers(model).values():
        layer.active = dict(weights)


def active_adapters(model: nn.Module) -> dict[str, float]:
    """The active adapters and their weights (``{}`` when the model has none)."""
    layers = lowrank_layers(model)
    return dict(next(iter(layers.values())).active) if layers else {}


# -- merging ----------------------------------------------------------------------------------


def merge(model: nn.Module) -> None:
    """Merge the active adapters into the base weights (inference then costs nothing extra).

    All layers are computed and checked first: if any merged weight would hold NaN or inf, nothing
    is changed and ``MergeError`` names the layer. Merging a merged model warns and does nothing.
    """
    layers = lowrank_layers(model)
    if not layers:
        raise AdapterNotFoundError("this model has no adapters to merge")
    if is_merged(model):
        warnings.warn("adapters are already merged; merge() did nothing", stacklevel=2)
        return
    plans = {}
    with torch.no_grad():
        for full_name, layer in layers.items():
            plan = layer.merge_plan()
            if plan is None:
                continue
            if not torch.isfinite(plan[1]).all():
                raise MergeError(
                    f"merging {sorted(plan[0])} into {full_name!r} would produce NaN or inf "
                    f"weights (dtype {layer.weight.dtype}); nothing was merged"
                )
            plans[full_name] = plan
    for full_name, (weights, new_weight) in plans.items():
        layers[full_name].commit_merge(weights, new_weight)


_merge = merge  # for unload(), whose ``merge`` argument shadows the function


def unmerge(model: nn.Module) -> None:
    """Restore the base weights bit-for-bit. A no-op on a model that is not merged."""
    for layer in lowrank_layers(model).values():
        layer.unmerge()


# -- training ---------------------------------------------------------------------------------


def adapter_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    """The parameters of adapter ``name`` (A and B of every layer it covers): what to train."""
    params: list[nn.Parameter] = []
    for layer in adapter_modules(model, name).values():
        params += [*layer.A(name).parameters(), *layer.B(name).parameters()]
    return params


def mark_trainable(
    model: nn.Module, names: str | Sequence[str], *, also: Sequence[str] = ()
) -> list[nn.Parameter]:
    """Make only adapter(s) ``names`` and the modules named in ``also`` (e.g. a head) trainable.

    Every other parameter gets ``requires_grad=False``. The flags from before are kept and come
    back when one of these adapters is removed or the model is unloaded. Returns the trainable
    parameters, ready for an optimiser.
    """
    names = [names] if isinstance(names, str) else list(names)
    _check_known(model, names)
    extra: list[nn.Parameter] = []
    for module_name in also:
        try:
            extra += list(model.get_submodule(module_name).parameters())
        except AttributeError as exc:
            raise ConfigError(f"also={module_name!r} names no module of this model") from exc
    if model not in _saved_flags:
        _saved_flags[model] = (set(), [(p, p.requires_grad) for p in model.parameters()])
    _saved_flags[model][0].update(names)
    trainable = [p for n in names for p in adapter_parameters(model, n)] + extra
    keep = {id(p) for p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return trainable


def _restore_flags(model: nn.Module) -> None:
    saved = _saved_flags.pop(model, None)
    if saved is None:
        return
    for param, flag in saved[1]:
        param.requires_grad_(flag)

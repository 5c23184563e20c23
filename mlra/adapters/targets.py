"""Which modules an adapter wraps: PEFT's target-matching rules.

A list of names matches a module whose full name equals an entry or ends in ``"." + entry``; a
single string is a regular expression that must match the full name. ``exclude`` uses the same
rules and wins over ``targets``.
"""

from __future__ import annotations

import re

from torch import nn

from mlra.adapters.base import AdapterLayer
from mlra.adapters.kinds import SUPPORTED, adapter_class, refusal
from mlra.adapters.spec import AdapterSpec, Targets
from mlra.errors import ConfigError, TargetNotFoundError

__all__ = ["matches", "outer_modules", "resolve_targets"]


def matches(name: str, targets: Targets) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def outer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every named module except those inside an ``AdapterLayer`` (its base layer and adapters):
    the model's own modules, with the names they had before any adapter was added."""
    found: dict[str, nn.Module] = {}
    wrapped: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(w + ".") for w in wrapped):
            continue
        if isinstance(module, AdapterLayer):
            wrapped.append(name)
        if name:
            found[name] = module
    return found


def resolve_targets(model: nn.Module, spec: AdapterSpec) -> list[str]:
    """The full names of the supported layers that ``spec`` targets, in model order.

    Raises ``TargetNotFoundError`` (listing some names that do exist) when nothing matches, and
    ``ConfigError`` when a target names a module that cannot carry an adapter, saying why.
    """
    candidates = outer_modules(model)
    chosen: list[str] = []
    for name, module in candidates.items():
        if not matches(name, spec.targets) or (spec.exclude and matches(name, spec.exclude)):
            continue
        if any(name.startswith(c + ".") for c in chosen):
            continue  # inside a chosen attention: its adapter covers out_proj already
        if adapter_class(module) is None:
            if isinstance(spec.targets, str):
                continue  # a regex may sweep over containers; only its layer matches count
            raise ConfigError(
                f"target {name!r} is a {type(module).__name__}; adapters wrap {SUPPORTED} layers"
            )
        parent_name, _, child = name.rpartition(".")
        why = refusal(candidates.get(parent_name, model), child, module)
        if why is not None:
            raise ConfigError(f"cannot put an adapter on {name!r}: {why}")
        chosen.append(name)
    if not chosen:
        layers = [n for n, m in candidates.items() if adapter_class(m) is not None]
        leaves = sorted({n.rsplit(".", 1)[-1] for n in layers})
        raise TargetNotFoundError(
            f"targets={spec.targets!r} (exclude={spec.exclude!r}) matched no adaptable layer "
            f"({SUPPORTED}). Such layers of this model end in: "
            f"{', '.join(leaves[:20]) or '(none)'}; for example {', '.join(layers[:5]) or '(none)'}"
        )
    return chosen

"""Which modules an adapter wraps: PEFT's target-matching rules.

A list of names matches a module whose full name equals an entry or ends in ``"." + entry``; a
single string is a regular expression that must match the full name. ``exclude`` uses the same
rules and wins over ``targets``.
"""

from __future__ import annotations

import re

from torch import nn

from mlra.adapters.layer import LowRankLinear
from mlra.adapters.spec import AdapterSpec, Targets
from mlra.errors import ConfigError, TargetNotFoundError

__all__ = ["matches", "outer_modules", "resolve_targets"]


def matches(name: str, targets: Targets) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def outer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every named module except those inside a ``LowRankLinear`` (its base layer and adapters):
    the model's own modules, with the names they had before any adapter was added."""
    found: dict[str, nn.Module] = {}
    wrapped: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(w + ".") for w in wrapped):
            continue
        if isinstance(module, LowRankLinear):
            wrapped.append(name)
        if name:
            found[name] = module
    return found


def resolve_targets(model: nn.Module, spec: AdapterSpec) -> list[str]:
    """The full names of the ``nn.Linear`` modules that ``spec`` targets, in model order.

    Raises ``TargetNotFoundError`` (listing some names that do exist) when nothing matches, and
    ``ConfigError`` when a target names a module that is not an ``nn.Linear``.
    """
    candidates = outer_modules(model)
    chosen: list[str] = []
    for name, module in candidates.items():
        if not matches(name, spec.targets) or (spec.exclude and matches(name, spec.exclude)):
            continue
        if not isinstance(module, nn.Linear | LowRankLinear):
            if isinstance(spec.targets, str):
                continue  # a regex may sweep over containers; only its Linear matches count
            raise ConfigError(
                f"target {name!r} is a {type(module).__name__}; adapters wrap nn.Linear layers only"
            )
        chosen.append(name)
    if not chosen:
        linear = [n for n, m in candidates.items() if isinstance(m, nn.Linear | LowRankLinear)]
        leaves = sorted({n.rsplit(".", 1)[-1] for n in linear})
        raise TargetNotFoundError(
            f"targets={spec.targets!r} (exclude={spec.exclude!r}) matched no nn.Linear module. "
            f"Linear layers of this model end in: {', '.join(leaves[:20]) or '(none)'}; "
            f"for example {', '.join(linear[:5]) or '(none)'}"
        )
    return chosen

"""``AdapterSpec``: what one named adapter is, as a frozen value."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from mlra.errors import ConfigError

__all__ = ["INITS", "AdapterSpec", "Targets"]

Init = Literal["lora", "gaussian"]
INITS: tuple[Init, ...] = ("lora", "gaussian")

# A target is a list of module names (matched exactly or as a ``.name`` suffix, PEFT's rule) or one
# regular expression that must match a module's full name.
Targets = tuple[str, ...] | str


def _normalise_targets(value: object, key: str, *, allow_empty: bool) -> Targets:
    if isinstance(value, str):
        if not value:
            raise ConfigError(f"{key} must not be an empty string")
        try:
            re.compile(value)
        except re.error as exc:
            raise ConfigError(f"{key}={value!r} is not a valid regular expression: {exc}") from exc
        return value
    if isinstance(value, Sequence):
        items = tuple(value)
        bad = [v for v in items if not isinstance(v, str) or not v]
        if bad:
            raise ConfigError(f"{key} must hold non-empty module names, got {bad[0]!r}")
        if not items and not allow_empty:
            raise ConfigError(f"{key} must name at least one module, got an empty list")
        return items
    raise ConfigError(
        f"{key} must be a list of module names or a regex string, got {value!r} "
        f"({type(value).__name__})"
    )


@dataclass(frozen=True)
class AdapterSpec:
    """One low-rank adapter: ``W x + scaling · B A dropout(x)`` on every matching ``nn.Linear``.

    ``scaling`` is ``alpha / rank`` (LoRA), or ``alpha / sqrt(rank)`` with ``rslora=True`` (rank-
    stabilised LoRA, which keeps the update's size steady as the rank grows). ``init="lora"`` draws
    A like ``nn.Linear`` (Kaiming-uniform) and sets B to zero, so a new adapter starts as the exact
    base model; ``init="gaussian"`` draws A from N(0, 1/rank) instead.
    """

    rank: int = 8
    alpha: float = 16.0
    targets: Targets = ("query", "value")
    exclude: Targets = ()
    dropout: float = 0.0
    init: Init = "lora"
    rslora: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
            raise ConfigError(f"rank must be a positive integer, got {self.rank!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float):
            raise ConfigError(f"alpha must be a positive number, got {self.alpha!r}")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ConfigError(f"alpha must be a positive finite number, got {self.alpha!r}")
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, int | float)
            or not 0.0 <= self.dropout < 1.0
        ):
            raise ConfigError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if not isinstance(self.rslora, bool):
            raise ConfigError(f"rslora must be true or false, got {self.rslora!r}")
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(
            self, "targets", _normalise_targets(self.targets, "targets", allow_empty=False)
        )
        object.__setattr__(
            self, "exclude", _normalise_targets(self.exclude, "exclude", allow_empty=True)
        )

    @property
    def scaling(self) -> float:
        """The factor in front of ``B A x``."""
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``AdapterSpec.from_dict`` reads it back."""
        data = asdict(self)
        for key in ("targets", "exclude"):
            value = getattr(self, key)
            data[key] = value if isinstance(value, str) else list(value)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdapterSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown AdapterSpec field(s): {', '.join(unknown)}")
        return cls(**dict(data))

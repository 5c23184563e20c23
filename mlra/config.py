"""The typed configuration: ``params.yaml`` mirrored 1:1 as frozen dataclasses.

``params.yaml`` is the one source of parameters (DVC reads the same file for ``dvc params diff``).
:func:`load_params` builds a :class:`Params` tree from it and checks every value; a missing key, an
unknown key, a value of the wrong type or out of range raises :class:`~mlra.errors.ConfigError`
naming the dotted key and the value.

To add a section: write a frozen dataclass whose fields are the section's keys (types from
``bool``, ``int``, ``float``, ``str``, ``datetime.date``, ``tuple[T, ...]`` and nested dataclasses),
check ranges in ``__post_init__`` with :func:`_require`, add it as a field of :class:`Params`, and
add the section to ``params.yaml``. The loader needs no other change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mlra.errors import ConfigError

__all__ = [
    "DataParams",
    "DriftParams",
    "FeedbackParams",
    "IngestParams",
    "Params",
    "SplitShares",
    "ValidationParams",
    "load_params",
    "params_from_dict",
]

_LABELS = ("negative", "neutral", "positive")
T = TypeVar("T")


def _require(ok: bool, key: str, value: object, expected: str) -> None:
    """Raise ConfigError for ``key`` unless ``ok``; ``expected`` says what a valid value is."""
    if not ok:
        raise ConfigError(f"params: {key} must be {expected}, got {value!r}")


def _share(key: str, value: float) -> None:
    _require(0.0 <= value <= 1.0, key, value, "a share in [0, 1]")


@dataclasses.dataclass(frozen=True)
class SplitShares:
    """Shares of the id-hash range per split. They sum to 1; golden is never trained on."""

    train: float
    val: float
    test: float
    golden: float

    def __post_init__(self) -> None:
        for name in ("train", "val", "test", "golden"):
            _share(f"data.splits.{name}", getattr(self, name))
        total = self.train + self.val + self.test + self.golden
        _require(
            math.isclose(total, 1.0, abs_tol=1e-9), "data.splits", total, "shares summing to 1"
        )
        _require(self.train > 0, "data.splits.train", self.train, "> 0")


@dataclasses.dataclass(frozen=True)
class DataParams:
    """The corpus, its domains, the split rule and where data lives."""

    prepared_dir: str
    feedback_dir: str
    inbox_dir: str
    seed: int
    source_domain: str
    target_domains: tuple[str, ...]
    feedback_pool: float
    splits: SplitShares
    text_min_chars: int
    text_max_chars: int

    def __post_init__(self) -> None:
        for name in ("prepared_dir", "feedback_dir", "inbox_dir", "source_domain"):
            _require(bool(getattr(self, name).strip()), f"data.{name}", getattr(self, name), "set")
        _require(len(self.target_domains) > 0, "data.target_domains", [], "a non-empty list")
        _require(
            len(set(self.target_domains)) == len(self.target_domains)
            and self.source_domain not in self.target_domains,
            "data.target_domains",
            list(self.target_domains),
            "distinct names, none equal to data.source_domain",
        )
        _require(
            0.0 <= self.feedback_pool < 1.0, "data.feedback_pool", self.feedback_pool, "in [0, 1)"
        )
        _require(self.text_min_chars >= 1, "data.text_min_chars", self.text_min_chars, ">= 1")
        _require(
            self.text_max_chars >= self.text_min_chars,
            "data.text_max_chars",
            self.text_max_chars,
            f">= data.text_min_chars ({self.text_min_chars})",
        )


@dataclasses.dataclass(frozen=True)
class FeedbackParams:
    """How ``mlra feedback simulate`` cuts held-out target-domain rows into dated batches."""

    batches: int
    rows_per_batch: int
    start_date: dt.date
    every_days: int
    relabel_share: float

    def __post_init__(self) -> None:
        _require(self.batches >= 1, "feedback.batches", self.batches, ">= 1")
        _require(self.rows_per_batch >= 1, "feedback.rows_per_batch", self.rows_per_batch, ">= 1")
        _require(self.every_days >= 1, "feedback.every_days", self.every_days, ">= 1")
        _share("feedback.relabel_share", self.relabel_share)


@dataclasses.dataclass(frozen=True)
class IngestParams:
    """What ``mlra ingest`` accepts."""

    required_fields: tuple[str, ...]
    max_id_chars: int

    def __post_init__(self) -> None:
        missing = {"text", "label"} - set(self.required_fields)
        _require(
            not missing,
            "ingest.required_fields",
            list(self.required_fields),
            "a list that includes text and label",
        )
        known = {"id", "text", "label", "domain", "source", "created_at"}
        _require(
            set(self.required_fields) <= known,
            "ingest.required_fields",
            list(self.required_fields),
            f"names from {sorted(known)}",
        )
        _require(self.max_id_chars >= 8, "ingest.max_id_chars", self.max_id_chars, ">= 8")


@dataclasses.dataclass(frozen=True)
class ValidationParams:
    """The gate over the prepared training data."""

    min_train_rows: int
    min_label_share: float
    max_label_share: float

    def __post_init__(self) -> None:
        _require(self.min_train_rows >= 1, "validation.min_train_rows", self.min_train_rows, ">= 1")
        _share("validation.min_label_share", self.min_label_share)
        _share("validation.max_label_share", self.max_label_share)
        _require(
            self.min_label_share < self.max_label_share,
            "validation.min_label_share",
            self.min_label_share,
            f"< validation.max_label_share ({self.max_label_share})",
        )


@dataclasses.dataclass(frozen=True)
class DriftParams:
    """Thresholds of the drift check: newest accepted feedback against the training data."""

    min_rows: int
    max_label_kl: float
    length_quantiles: tuple[float, ...]
    max_length_shift: float
    max_unseen_domain_share: float

    def __post_init__(self) -> None:
        _require(self.min_rows >= 1, "drift.min_rows", self.min_rows, ">= 1")
        _require(self.max_label_kl > 0, "drift.max_label_kl", self.max_label_kl, "> 0")
        _require(
            len(self.length_quantiles) > 0 and all(0 < q < 1 for q in self.length_quantiles),
            "drift.length_quantiles",
            list(self.length_quantiles),
            "a non-empty list of numbers in (0, 1)",
        )
        _require(self.max_length_shift > 0, "drift.max_length_shift", self.max_length_shift, "> 0")
        _share("drift.max_unseen_domain_share", self.max_unseen_domain_share)


@dataclasses.dataclass(frozen=True)
class Params:
    """The whole of ``params.yaml``: one field per top-level section."""

    data: DataParams
    feedback: FeedbackParams
    ingest: IngestParams
    validation: ValidationParams
    drift: DriftParams

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, ISO dates), as it would read back from ``params.yaml``."""
        return typing.cast(dict[str, Any], _plain(dataclasses.asdict(self)))


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and check ``params.yaml``. Raises ConfigError naming the file and the bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no parameter file at {path} (run from the project root?)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    try:
        return params_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {str(exc).removeprefix('params: ')}") from None


def params_from_dict(raw: object) -> Params:
    """Build :class:`Params` from plain data (what ``yaml.safe_load`` returns)."""
    return _build(Params, raw, "")


def _build(cls: type[T], raw: object, key: str) -> T:
    """Build the dataclass ``cls`` from a mapping, checking keys and value types."""
    where = key or "the top level"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"params: {where} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in raw if k not in fields)
    if unknown:
        raise ConfigError(
            f"params: unknown keys in {where}: {', '.join(unknown)} (known: {', '.join(fields)})"
        )
    missing = [name for name in fields if name not in raw]
    if missing:
        raise ConfigError(f"params: missing keys in {where}: {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    values = {
        name: _convert(hints[name], raw[name], f"{key}.{name}" if key else name) for name in fields
    }
    return cls(**values)


def _convert(tp: Any, value: object, key: str) -> object:
    """Check ``value`` against the annotation ``tp`` and convert it (list → tuple, int → float)."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, key)
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(tp)
        _require(isinstance(value, list | tuple), key, value, "a list")
        assert isinstance(value, list | tuple)
        return tuple(_convert(item_type, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"union types are not supported in params ({key})")
    if tp is bool:
        _require(isinstance(value, bool), key, value, "true or false")
        return value
    if tp is int:
        _require(isinstance(value, int) and not isinstance(value, bool), key, value, "an integer")
        return value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _require(ok and math.isfinite(float(value)), key, value, "a number")  # type: ignore[arg-type]
        return float(value)  # type: ignore[arg-type]
    if tp is str:
        _require(isinstance(value, str), key, value, "a string")
        return value
    if tp is dt.date:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise ConfigError(f"params: {key} must be a date (YYYY-MM-DD), got {value!r}")
    raise TypeError(f"unsupported type {tp!r} for params key {key}")

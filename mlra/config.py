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
from typing import Any, Final, TypeVar

import yaml

from mlra.errors import ConfigError
from mlra.spec import AdapterSpec

__all__ = [
    "DataParams",
    "DriftParams",
    "EarlyStoppingParams",
    "EvaluateParams",
    "FeedbackParams",
    "IngestParams",
    "ModuleOverride",
    "ModulesParams",
    "Params",
    "RouterParams",
    "SplitShares",
    "TrainParams",
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
    report_dir: str = "reports/validation"  # report.json, report.html, data_docs/

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
class RegistryParams:
    """Names in the MLflow store (where the store is comes from ``$MLFLOW_TRACKING_URI``)."""

    model_name: str
    experiment: str

    def __post_init__(self) -> None:
        for name in ("model_name", "experiment"):
            value = getattr(self, name)
            _require(bool(value.strip()), f"registry.{name}", value, "a non-empty name")


@dataclasses.dataclass(frozen=True)
class Approver:
    """A person who may approve versions, with the Ed25519 public key their approvals are signed
    with (``mlra keys show NAME`` prints it; docs/governance.md)."""

    name: str
    public_key: str

    def __post_init__(self) -> None:
        _require(bool(self.name.strip()), "promotion.approvers[].name", self.name, "a name")
        _require(len(self.public_key.strip()) >= 32, f"promotion.approvers[{self.name}].public_key",
                 self.public_key, "an Ed25519 public key (base64)")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class PromotionParams:
    """What a version must show before it may serve (``mlra.promotion``; docs/governance.md).

    Gains and regressions are in macro-F1 (0.01 = one point), against the champion (the base
    model when there is none). Slices with fewer than ``min_slice_support`` golden rows are
    reported but not gated. ``approval``: ``manual`` (a person approves each champion),
    ``automatic`` (recorded as the approver ``policy:automatic``), or ``first-automatic`` (the
    first champion, when none serves yet, is promoted by the policy; every later one needs a
    person). ``approvers``: who may approve, with their public keys (empty: anyone whose key is
    in the local keyring, created on first use). ``separation_of_duties``: the actor who trained
    or registered a version may not approve it.
    """

    min_overall_gain: float
    max_slice_regression: float
    min_slice_support: int
    approval: str
    approvers: tuple[Approver, ...] = ()
    separation_of_duties: bool = True

    def __post_init__(self) -> None:
        key = "promotion"
        _require(-1.0 <= self.min_overall_gain <= 1.0, f"{key}.min_overall_gain",
                 self.min_overall_gain, "in [-1, 1] (macro-F1)")  # fmt: skip
        _require(0.0 <= self.max_slice_regression <= 1.0, f"{key}.max_slice_regression",
                 self.max_slice_regression, "in [0, 1] (macro-F1)")  # fmt: skip
        _require(self.min_slice_support >= 0, f"{key}.min_slice_support",
                 self.min_slice_support, ">= 0")  # fmt: skip
        _require(self.approval in APPROVALS, f"{key}.approval", self.approval,
                 ", ".join(APPROVALS))  # fmt: skip


APPROVALS: Final = ("manual", "automatic", "first-automatic")
CRON_FIELDS: Final = 5


@dataclasses.dataclass(frozen=True)
class PipelineParams:
    """The Prefect flows (``flows/``; docs/pipeline.md): schedule, retrain threshold, approval
    wait and retries of transient faults."""

    schedule: str
    min_new_rows: int
    approval_timeout_s: int
    retries: int
    retry_delay_s: float
    simulate_when_empty: bool

    def __post_init__(self) -> None:
        key = "pipeline"
        _require(len(self.schedule.split()) == CRON_FIELDS, f"{key}.schedule", self.schedule,
                 "a cron expression of 5 fields, e.g. '0 3 * * 1'")  # fmt: skip
        _require(self.min_new_rows >= 1, f"{key}.min_new_rows", self.min_new_rows, ">= 1")
        _require(self.approval_timeout_s >= 0, f"{key}.approval_timeout_s",
                 self.approval_timeout_s, ">= 0 (0: do not wait)")  # fmt: skip
        _require(0 <= self.retries <= 20, f"{key}.retries", self.retries, "in [0, 20]")
        _require(0 <= self.retry_delay_s <= 3600, f"{key}.retry_delay_s", self.retry_delay_s,
                 "in [0, 3600] seconds")  # fmt: skip


PRECISIONS: Final = ("32-true", "bf16-mixed", "16-mixed")
SCHEDULES: Final = ("linear", "cosine", "constant")
MONITORS: Final = {"val_macro_f1": "max", "val_accuracy": "max", "val_loss": "min"}


@dataclasses.dataclass(frozen=True)
class EarlyStoppingParams:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` validations."""

    monitor: str
    patience: int
    min_delta: float

    def __post_init__(self) -> None:
        _require(self.monitor in MONITORS, "train.early_stopping.monitor", self.monitor,
                 f"one of {', '.join(MONITORS)}")  # fmt: skip
        _require(self.patience >= 1, "train.early_stopping.patience", self.patience, ">= 1")
        _require(self.min_delta >= 0, "train.early_stopping.min_delta", self.min_delta, ">= 0")

    @property
    def mode(self) -> str:
        return MONITORS[self.monitor]


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """``mlra train``: the adapter, the data it sees, the optimiser and the Trainer."""

    out_dir: str
    checkpoint_dir: str
    adapter_name: str
    seed: int
    deterministic: bool
    adapter: AdapterSpec  # rank, alpha, targets, exclude, dropout, init, rslora
    pooling: str
    max_length: int
    rows_per_domain: int
    val_rows_per_domain: int
    source_rows: int
    batch_size: int
    accumulate_grad_batches: int
    max_epochs: int
    max_steps: int
    lr: float
    head_lr: float
    weight_decay: float
    schedule: str
    warmup_share: float
    val_every_steps: int
    checkpoint_every_steps: int
    log_every_steps: int
    early_stopping: EarlyStoppingParams
    accelerator: str
    devices: int
    strategy: str
    precision: str
    experiment: str
    # compute the frozen layers below the lowest adapter once per row and reuse them every epoch
    cache_frozen: bool = True
    # source-domain rows mixed into the adapter's training rows (rehearsal against forgetting)
    replay_rows: int = 0

    def __post_init__(self) -> None:
        for name in ("out_dir", "checkpoint_dir", "adapter_name", "experiment"):
            _require(bool(getattr(self, name).strip()), f"train.{name}", getattr(self, name), "set")
        _require("." not in self.adapter_name, "train.adapter_name", self.adapter_name,
                 "a name without '.'")  # fmt: skip
        for name in ("max_length", "batch_size", "accumulate_grad_batches", "max_epochs",
                     "checkpoint_every_steps", "log_every_steps", "devices"):  # fmt: skip
            _require(getattr(self, name) >= 1, f"train.{name}", getattr(self, name), ">= 1")
        for name in ("rows_per_domain", "val_rows_per_domain", "source_rows", "val_every_steps",
                     "replay_rows"):  # fmt: skip
            _require(
                getattr(self, name) >= 0, f"train.{name}", getattr(self, name), ">= 0 (0: all)"
            )
        _require(self.max_steps == -1 or self.max_steps >= 1, "train.max_steps", self.max_steps,
                 ">= 1, or -1 (max_epochs decides)")  # fmt: skip
        _require(self.pooling in ("mean", "cls"), "train.pooling", self.pooling, "mean or cls")
        for name in ("lr", "head_lr"):
            _require(getattr(self, name) > 0, f"train.{name}", getattr(self, name), "> 0")
        _require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, ">= 0")
        _require(self.schedule in SCHEDULES, "train.schedule", self.schedule,
                 f"one of {', '.join(SCHEDULES)}")  # fmt: skip
        _require(0 <= self.warmup_share < 1, "train.warmup_share", self.warmup_share, "in [0, 1)")
        _require(self.precision in PRECISIONS, "train.precision", self.precision,
                 f"one of {', '.join(PRECISIONS)}")  # fmt: skip
        _require(self.accelerator in ("auto", "cpu", "cuda", "gpu"), "train.accelerator",
                 self.accelerator, "auto, cpu, cuda or gpu")  # fmt: skip
        _require(self.strategy in ("auto", "ddp", "ddp_spawn"), "train.strategy", self.strategy,
                 "auto, ddp or ddp_spawn")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    """``mlra evaluate``: golden-set slices, outputs, and the champion to compare with."""

    metrics_file: str
    report_file: str
    plots_dir: str
    champion_dir: str
    max_rows_per_slice: int
    batch_size: int
    noisy_class_rows: int

    def __post_init__(self) -> None:
        for name in ("metrics_file", "report_file", "plots_dir"):
            _require(bool(getattr(self, name).strip()), f"evaluate.{name}", getattr(self, name),
                     "set")  # fmt: skip
        _require(self.max_rows_per_slice >= 0, "evaluate.max_rows_per_slice",
                 self.max_rows_per_slice, ">= 0 (0: all)")  # fmt: skip
        _require(self.batch_size >= 1, "evaluate.batch_size", self.batch_size, ">= 1")
        _require(self.noisy_class_rows >= 0, "evaluate.noisy_class_rows", self.noisy_class_rows,
                 ">= 0")  # fmt: skip


MODES: Final = ("modular", "shared")
FALLBACKS_BASE: Final = "base"


@dataclasses.dataclass(frozen=True)
class ModuleOverride:
    """One module whose adapter differs from ``train.adapter``: 0 / empty keep that value."""

    module: str
    rank: int = 0
    alpha: float = 0.0
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(bool(self.module.strip()), "modules.overrides[].module", self.module, "a module")
        _require(self.rank >= 0, f"modules.overrides[{self.module}].rank", self.rank,
                 ">= 0 (0: train.adapter's)")  # fmt: skip
        _require(self.alpha >= 0, f"modules.overrides[{self.module}].alpha", self.alpha,
                 ">= 0 (0: train.adapter's)")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RouterParams:
    """The learned router: a linear classifier over the frozen base's pooled hidden states after
    ``layer`` encoder layers (the layers below the adapters, computed once per row anyway), which
    picks a request's module when the request does not name its domain."""

    layer: int = 3
    min_confidence: float = 0.5
    fallback: str = FALLBACKS_BASE
    min_accuracy: float = 0.8

    def __post_init__(self) -> None:
        key = "modules.router"
        _require(self.layer >= 0, f"{key}.layer", self.layer, ">= 0 (encoder layers)")
        _share(f"{key}.min_confidence", self.min_confidence)
        _share(f"{key}.min_accuracy", self.min_accuracy)
        _require(bool(self.fallback.strip()), f"{key}.fallback", self.fallback,
                 "'base' or a module name")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ModulesParams:
    """Modular adapters (docs/modules.md): one adapter and head per target domain on the shared
    frozen base, trained together in one routed pass, each registered, gated, promoted and rolled
    back on its own; what serves is the bundle of module champions plus the router.

    ``mode``: ``modular`` or ``shared`` (one adapter for every target domain, as before).
    ``domains``: target domains that get a module (empty: every target domain); a request for
    another domain goes to the router's fallback. ``min_new_rows``: a module retrains once its
    domain received this many new accepted feedback rows since its last training (or when its
    parameters changed). ``max_source_regression``: the bundle gate on the source domain — its
    macro-F1 may fall at most this far below the base model's.
    """

    mode: str = "shared"
    domains: tuple[str, ...] = ()
    overrides: tuple[ModuleOverride, ...] = ()
    out_dir: str = "artifacts/modules"
    min_new_rows: int = 40
    max_source_regression: float = 0.005
    router: RouterParams = dataclasses.field(default_factory=RouterParams)

    def __post_init__(self) -> None:
        _require(self.mode in MODES, "modules.mode", self.mode, " or ".join(MODES))
        _require(bool(self.out_dir.strip()), "modules.out_dir", self.out_dir, "set")
        _require(self.min_new_rows >= 1, "modules.min_new_rows", self.min_new_rows, ">= 1")
        _share("modules.max_source_regression", self.max_source_regression)
        for name in self.domains:
            _require(bool(name) and "." not in name and "/" not in name, "modules.domains",
                     name, "domain names without '.' or '/'")  # fmt: skip
        seen = [o.module for o in self.overrides]
        _require(len(seen) == len(set(seen)), "modules.overrides", seen, "one entry per module")

    def names(self, data: DataParams) -> tuple[str, ...]:
        """The modules, in the order of ``data.target_domains``: one per target domain."""
        return tuple(d for d in data.target_domains if not self.domains or d in self.domains)

    def spec(self, module: str, base: AdapterSpec) -> AdapterSpec:
        """The adapter spec of ``module``: ``base`` (``train.adapter``) with its override."""
        for o in self.overrides:
            if o.module == module:
                changes: dict[str, Any] = {}
                if o.rank:
                    changes["rank"] = o.rank
                if o.alpha:
                    changes["alpha"] = o.alpha
                if o.targets:
                    changes["targets"] = o.targets
                return dataclasses.replace(base, **changes)
        return base


@dataclasses.dataclass(frozen=True)
class Params:
    """The whole of ``params.yaml``: one field per top-level section."""

    data: DataParams
    feedback: FeedbackParams
    ingest: IngestParams
    validation: ValidationParams
    drift: DriftParams
    train: TrainParams
    evaluate: EvaluateParams
    registry: RegistryParams
    promotion: PromotionParams
    pipeline: PipelineParams
    modules: ModulesParams = dataclasses.field(default_factory=ModulesParams)

    def __post_init__(self) -> None:
        for name in self.modules.domains:
            targets = ", ".join(self.data.target_domains)
            _require(name in self.data.target_domains, "modules.domains", name,
                     f"one of data.target_domains ({targets})")  # fmt: skip
        names = self.modules.names(self.data)
        for o in self.modules.overrides:
            _require(o.module in names, "modules.overrides[].module", o.module,
                     f"a module ({', '.join(names)})")  # fmt: skip
        fallback = self.modules.router.fallback
        _require(fallback == FALLBACKS_BASE or fallback in names, "modules.router.fallback",
                 fallback, f"'base' or a module ({', '.join(names)})")  # fmt: skip

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
    missing = [
        name
        for name, f in fields.items()
        if name not in raw
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"params: missing keys in {where}: {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    values = {
        name: _convert(hints[name], raw[name], f"{key}.{name}" if key else name)
        for name in fields
        if name in raw
    }
    return cls(**values)


def _convert(tp: Any, value: object, key: str) -> object:
    """Check ``value`` against the annotation ``tp`` and convert it (list → tuple, int → float)."""
    if tp is AdapterSpec:  # its own checks name the field; targets may be a list or a regex
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"params: {key} must be a mapping of AdapterSpec fields, got {value!r}"
            )
        raw = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        try:
            return AdapterSpec.from_dict(raw)
        except ConfigError as exc:
            raise ConfigError(f"params: {key}: {exc}") from None
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

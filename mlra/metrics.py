"""Metrics: how a prediction is scored (:func:`scores`, :func:`confusion`) and the evaluation JSON
that evaluation writes and the registry and the promotion gates read (:class:`EvaluationMetrics`).
One owner for both, so training, evaluation and the registry depend on this module and not on each
other."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlra.errors import ConfigError

if TYPE_CHECKING:  # torch is imported by the functions that score (the registry reads JSON)
    import torch

__all__ = ["EvaluationMetrics", "Scores", "SliceScores", "confusion", "scores"]


@dataclass(frozen=True)
class Scores:
    accuracy: float
    macro_f1: float
    f1: dict[str, float]  # per class
    support: int

    def to_dict(self) -> dict[str, object]:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "f1": dict(self.f1),
            "support": self.support,
        }


def confusion(y_true: torch.Tensor, y_pred: torch.Tensor, n: int) -> torch.Tensor:
    """``[n, n]`` counts: row = true class, column = predicted class."""
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)} differ")
    import torch

    return torch.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


def scores(y_true: torch.Tensor, y_pred: torch.Tensor, labels: Sequence[str]) -> Scores:
    """Accuracy, per-class F1 and their unweighted mean (macro-F1) over class indices.

    A class absent from both truth and prediction has no defined F1 and is left out of the mean;
    one predicted but absent from the truth (or the reverse) scores 0.
    """
    n = len(labels)
    matrix = confusion(y_true, y_pred, n).double()
    tp = matrix.diag()
    true, pred = matrix.sum(1), matrix.sum(0)
    f1: dict[str, float] = {}
    for k, label in enumerate(labels):
        if true[k] + pred[k] > 0:
            f1[label] = float(2 * tp[k] / (true[k] + pred[k]))
    total = int(matrix.sum())
    return Scores(
        accuracy=float(tp.sum() / total) if total else 0.0,
        macro_f1=sum(f1.values()) / len(f1) if f1 else 0.0,
        f1=f1,
        support=total,
    )


@dataclass(frozen=True)
class SliceScores:
    """One slice's scores: the base model, this candidate and the champion (None: no champion)."""

    base: Mapping[str, Any]
    candidate: Mapping[str, Any]
    champion: Mapping[str, Any] | None

    @property
    def support(self) -> int:
        return int(self.candidate.get("support", 0))

    def reference(self) -> Mapping[str, Any]:
        """What the candidate is judged against: the champion, else the base model."""
        return self.champion if self.champion is not None else self.base


@dataclass(frozen=True)
class EvaluationMetrics:
    """The evaluation JSON: ``{"labels", "slices": {name: {base, candidate, champion}},
    "overall": {base, candidate, champion}}``, each score ``{accuracy, macro_f1, f1, support}``."""

    labels: tuple[str, ...]
    slices: Mapping[str, SliceScores]
    overall: SliceScores
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, data: Any, where: str = "metrics") -> EvaluationMetrics:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        for key in ("labels", "slices", "overall"):
            if key not in data:
                raise ConfigError(f"{where}: missing key {key!r} (see docs/governance.md)")
        if not isinstance(data["slices"], Mapping):
            raise ConfigError(f"{where}: 'slices' must map slice names to scores")
        return cls(
            labels=tuple(str(x) for x in data["labels"]),
            slices={str(k): _slice(v, f"{where}: slices.{k}") for k, v in data["slices"].items()},
            overall=_slice(data["overall"], f"{where}: overall"),
            raw=data,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvaluationMetrics:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), str(path))
        except (OSError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"cannot read the evaluation metrics {path}: {exc}") from exc


def _scores(value: Any, where: str, optional: bool = False) -> Mapping[str, Any] | None:
    if value is None and optional:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be scores {{accuracy, macro_f1, f1, support}}")
    for key in ("accuracy", "macro_f1", "support"):
        number = value.get(key)
        if not isinstance(number, int | float) or isinstance(number, bool):
            raise ConfigError(f"{where}.{key} must be a number, got {number!r}")
        if not math.isfinite(float(number)):
            raise ConfigError(f"{where}.{key} must be finite, got {number!r}")
    return value


def _slice(value: Any, where: str) -> SliceScores:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be {{base, candidate, champion}}")
    base, candidate = _scores(value.get("base"), f"{where}.base"), None
    candidate = _scores(value.get("candidate"), f"{where}.candidate")
    assert base is not None and candidate is not None
    return SliceScores(base, candidate, _scores(value.get("champion"), f"{where}.champion", True))

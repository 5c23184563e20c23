"""Classification metrics: accuracy, per-class F1 and macro-F1.

Accuracy misleads on the skewed target domains (a majority-class guess scores 0.85 on Claritin), so
every report carries macro-F1 beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Scores", "scores"]


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


def scores(y_true: torch.Tensor, y_pred: torch.Tensor, labels: Sequence[str]) -> Scores:
    """Accuracy, per-class F1 and their unweighted mean (macro-F1) over class indices.

    A class absent from both truth and prediction has no defined F1 and is left out of the mean;
    one predicted but absent from the truth (or the reverse) scores 0.
    """
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)} differ")
    n = len(labels)
    confusion = torch.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n).double()
    tp = confusion.diag()
    true, pred = confusion.sum(1), confusion.sum(0)
    f1: dict[str, float] = {}
    for k, label in enumerate(labels):
        if true[k] + pred[k] > 0:
            f1[label] = float(2 * tp[k] / (true[k] + pred[k]))
    total = int(confusion.sum())
    return Scores(
        accuracy=float(tp.sum() / total) if total else 0.0,
        macro_f1=sum(f1.values()) / len(f1) if f1 else 0.0,
        f1=f1,
        support=total,
    )

"""Metrics against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from mlra.evaluation import scores

LABELS = ("negative", "neutral", "positive")


def test_scores_match_hand_computation() -> None:
    y_true = torch.tensor([0, 0, 0, 1, 1, 2])
    y_pred = torch.tensor([0, 0, 1, 1, 2, 2])
    s = scores(y_true, y_pred, LABELS)
    # negative: tp 2, 3 true, 2 predicted -> 4/5; neutral: tp 1, 2 true, 2 predicted -> 1/2;
    # positive: tp 1, 1 true, 2 predicted -> 2/3
    assert s.f1 == pytest.approx({"negative": 0.8, "neutral": 0.5, "positive": 2 / 3})
    assert s.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert s.accuracy == pytest.approx(4 / 6) and s.support == 6


def test_majority_guess_scores_high_accuracy_but_low_macro_f1() -> None:
    y_true = torch.tensor([1] * 17 + [0, 2, 2])
    s = scores(y_true, torch.ones_like(y_true), LABELS)
    assert s.accuracy == pytest.approx(0.85)
    assert s.macro_f1 == pytest.approx((0 + 2 * 17 / (17 + 20) + 0) / 3)


def test_a_class_absent_from_truth_and_prediction_is_left_out() -> None:
    s = scores(torch.tensor([0, 1]), torch.tensor([0, 1]), LABELS)
    assert s.f1 == {"negative": 1.0, "neutral": 1.0} and s.macro_f1 == 1.0


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        scores(torch.tensor([0, 1]), torch.tensor([0, 1, 2]), LABELS)

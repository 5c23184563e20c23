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


# -- evaluate(): base, candidate and champion over golden slices, on a tiny model -----------------


def _data_params(prepared: str):  # type: ignore[no-untyped-def]
    from mlra.config import DataParams, SplitShares

    return DataParams(
        prepared_dir=prepared, feedback_dir="unused", inbox_dir="unused", seed=0,
        source_domain="airline", target_domains=("apple", "nfl"), feedback_pool=0.0,
        splits=SplitShares(train=0.7, val=0.1, test=0.1, golden=0.1),
        text_min_chars=1, text_max_chars=1000,
    )  # fmt: skip


def _eval_params():  # type: ignore[no-untyped-def]
    from mlra.config import EvaluateParams

    return EvaluateParams(
        metrics_file="m.json", report_file="m.md", plots_dir="plots", champion_dir="",
        max_rows_per_slice=0, batch_size=16, noisy_class_rows=5,
    )  # fmt: skip


def test_evaluate_scores_every_slice_for_base_candidate_and_champion(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import copy
    import json

    import pandas as pd

    import mlra
    from mlra.classifier import SentenceClassifier, embed_texts
    from mlra.evaluation import evaluate, write_outputs
    from mlra.training import AdapterClassifier, save_candidate
    from tests.conftest import make_tiny_bert
    from tests.test_training import tiny_rows, tiny_tokenizer, tiny_train_params

    tok = tiny_tokenizer()
    for name, seed in (("candidate", 1), ("champion", 2)):
        model = SentenceClassifier(make_tiny_bert(), 3)
        torch.manual_seed(seed)
        base_head = copy.deepcopy(model.head)
        module = AdapterClassifier(model, tiny_train_params(), LABELS)
        with torch.no_grad():
            for p in mlra.adapter_parameters(model, "tiny"):
                p.normal_(0, 0.5)  # a visibly different model from the base
            model.head.weight.normal_()
        save_candidate(
            module, base_head, tmp_path / name, {"params": {"train": {"max_length": 24}}}
        )
    texts, labels = tiny_rows(60, 3)
    golden = pd.DataFrame({
        "id": [f"{i:03d}" for i in range(60)], "text": texts,
        "label": [LABELS[k] for k in labels], "domain": ["airline", "apple", "nfl"] * 20,
        "origin": "corpus",
    })  # fmt: skip
    golden.to_parquet(tmp_path / "golden.parquet")

    result = evaluate(
        _data_params(str(tmp_path)), _eval_params(), tmp_path / "candidate",
        champion_dir=tmp_path / "champion", model=SentenceClassifier(make_tiny_bert(), 3),
        tokenizer=tok,
    )  # fmt: skip
    assert result.models == ("base", "candidate", "champion")
    assert list(result.slices) == [
        "airline",
        "apple",
        "nfl",
        "targets",
        "targets_without_nfl",
        "all",
    ]
    assert result.slices["targets"].scores["candidate"].support == 40
    assert result.slices["all"].scores["base"].support == 60

    # the base is the encoder without adapter and the saved base head
    fresh = SentenceClassifier(make_tiny_bert(), 3)
    torch.manual_seed(1)
    fresh.head = copy.deepcopy(torch.nn.Linear(32, 3))
    import safetensors.torch

    fresh.head.load_state_dict(
        safetensors.torch.load_file(tmp_path / "candidate" / "base_head.safetensors")
    )
    expected = fresh.head(embed_texts(fresh, tok, texts, max_length=24)).argmax(-1)
    y = torch.tensor(labels)
    assert result.slices["all"].scores["base"] == scores(y, expected, LABELS)
    assert result.slices["all"].scores["candidate"] != result.slices["all"].scores["champion"]

    plots = write_outputs(
        result, tmp_path / "out" / "eval.json", tmp_path / "out" / "eval.md", tmp_path / "plots"
    )
    data = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert data["overall"] == data["slices"]["targets"] and data["overall_slice"] == "targets"
    assert set(data["slices"]["apple"]) >= {"base", "candidate", "champion", "noisy"}
    assert {p.name for p in plots} >= {"confusion_apple.png", "macro_f1_by_slice.png"}
    assert all(p.stat().st_size > 5000 for p in plots)
    assert "| apple" in (tmp_path / "out" / "eval.md").read_text()
    try:
        from mlra.registry import EvaluationMetrics
    except ImportError:
        return
    assert (
        EvaluationMetrics.from_dict(data).overall.champion is not None
    )  # the format the gates read


def test_a_changed_base_head_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import copy

    from mlra.classifier import SentenceClassifier
    from mlra.errors import IntegrityError
    from mlra.evaluation import evaluate
    from mlra.training import AdapterClassifier, save_candidate
    from tests.conftest import make_tiny_bert
    from tests.test_training import tiny_tokenizer, tiny_train_params

    model = SentenceClassifier(make_tiny_bert(), 3)
    module = AdapterClassifier(model, tiny_train_params(), LABELS)
    save_candidate(module, copy.deepcopy(model.head), tmp_path / "c", {"params": {}})
    path = tmp_path / "c" / "base_head.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(IntegrityError, match=r"base_head\.safetensors does not match"):
        evaluate(
            _data_params(str(tmp_path)), _eval_params(), tmp_path / "c",
            model=SentenceClassifier(make_tiny_bert(), 3), tokenizer=tiny_tokenizer(),
        )  # fmt: skip

"""params.yaml ↔ mlra.config: every key typed and checked; errors name the key and the value."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlra.config import Params, load_params, params_from_dict
from mlra.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def with_value(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


def test_repository_params_load_typed(raw: dict[str, Any]) -> None:
    """YAML's plain values become the annotated types: lists are tuples, dates are dates, ints
    given for floats are floats; whatever values the file holds."""
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.data.target_domains == tuple(raw["data"]["target_domains"])
    assert params.data.source_domain not in params.data.target_domains
    assert params.feedback.start_date == dt.date.fromisoformat(raw["feedback"]["start_date"])
    assert isinstance(params.drift.max_label_kl, float)
    edited = params_from_dict(with_value(raw, "drift.max_label_kl", 1))
    assert edited.drift.max_label_kl == 1.0 and isinstance(edited.drift.max_label_kl, float)


def test_a_changed_value_reaches_its_field_and_nothing_else(raw: dict[str, Any]) -> None:
    params = params_from_dict(raw)
    changed = params_from_dict(with_value(raw, "data.seed", raw["data"]["seed"] + 7))
    assert changed.data.seed == params.data.seed + 7
    assert changed.feedback == params.feedback and changed.train == params.train
    assert changed != params


def test_round_trip_through_dict_and_file(tmp_path: Path) -> None:
    """to_dict() is what load_params() reads back: the same Params, equal field by field."""
    params = load_params(REPO / "params.yaml")
    assert params_from_dict(params.to_dict()) == params
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params.to_dict()), encoding="utf-8")
    assert load_params(path) == params


def test_mirror_is_one_to_one(raw: dict[str, Any]) -> None:
    """Every key of params.yaml is a field and back: to_dict() reproduces the file's data."""
    assert load_params(REPO / "params.yaml").to_dict() == raw


def test_frozen() -> None:
    params = load_params(REPO / "params.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.data.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data.seed", "zero", "data.seed must be an integer, got 'zero'"),
        ("data.seed", True, "data.seed must be an integer, got True"),
        ("data.feedback_pool", 1.0, "data.feedback_pool must be in [0, 1), got 1.0"),
        ("data.splits.train", -0.1, "data.splits.train must be a share in [0, 1], got -0.1"),
        ("data.splits.val", 0.3, "data.splits must be shares summing to 1, got 1.2"),
        ("data.text_max_chars", 0, "data.text_max_chars must be >= data.text_min_chars"),
        ("data.target_domains", "nfl", "data.target_domains must be a list, got 'nfl'"),
        ("data.target_domains", ["airline"], "none equal to data.source_domain"),
        ("data.target_domains", [1], "data.target_domains[0] must be a string, got 1"),
        ("feedback.start_date", "soon", "feedback.start_date must be a date (YYYY-MM-DD)"),
        ("feedback.batches", 0, "feedback.batches must be >= 1, got 0"),
        ("ingest.required_fields", ["text"], "a list that includes text and label"),
        ("validation.min_label_share", 0.9, "< validation.max_label_share (0.8)"),
        ("drift.max_label_kl", "nan", "drift.max_label_kl must be a number, got 'nan'"),
        ("drift.max_label_kl", float("inf"), "drift.max_label_kl must be a number, got inf"),
        ("drift.length_quantiles", [0.5, 1.5], "drift.length_quantiles must be a non-empty"),
        ("validation", [1], "validation must be a mapping, got [1]"),
    ],
)
def test_bad_values_name_key_and_value(
    raw: dict[str, Any], key: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        params_from_dict(with_value(raw, key, value))
    assert message in str(info.value)


def test_unknown_and_missing_keys(raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="unknown keys in the top level: trian"):
        params_from_dict(raw | {"trian": {}})
    with pytest.raises(ConfigError, match=r"unknown keys in data\.splits: dev"):
        params_from_dict(with_value(raw, "data.splits.dev", 0.1))
    data = copy.deepcopy(raw)
    del data["drift"]["min_rows"]
    with pytest.raises(ConfigError, match="missing keys in drift: min_rows"):
        params_from_dict(data)


def test_load_params_file_errors(tmp_path: Path, raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="no parameter file"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_params(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"data": 1}))
    with pytest.raises(ConfigError, match=r"wrong.yaml: missing keys in the top level: feedback"):
        load_params(wrong)
    wrong.write_text(yaml.safe_dump(with_value(raw, "data.seed", 1.5)))
    with pytest.raises(ConfigError, match=r"wrong.yaml: data.seed must be an integer, got 1.5"):
        load_params(wrong)

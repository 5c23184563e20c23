"""AdapterSpec: defaults, scaling, validation of every field, round trip."""

from __future__ import annotations

import math

import pytest

from mlra import AdapterSpec
from mlra.errors import ConfigError


def test_defaults_and_scaling() -> None:
    spec = AdapterSpec()
    assert (spec.rank, spec.alpha, spec.targets, spec.init) == (8, 16.0, ("query", "value"), "lora")
    assert spec.scaling == 2.0
    assert AdapterSpec(rank=16, alpha=16, rslora=True).scaling == pytest.approx(16 / math.sqrt(16))


def test_lists_become_tuples_and_the_spec_is_hashable() -> None:
    spec = AdapterSpec(targets=["fc1", "out"], exclude=["x"])
    assert spec.targets == ("fc1", "out") and spec.exclude == ("x",)
    assert hash(spec) == hash(AdapterSpec(targets=("fc1", "out"), exclude=("x",)))


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("rank", 0, "got 0"),
        ("rank", -3, "got -3"),
        ("rank", 2.5, "got 2.5"),
        ("rank", True, "got True"),
        ("alpha", 0, "got 0"),
        ("alpha", -1.0, "got -1.0"),
        ("alpha", float("nan"), "got nan"),
        ("alpha", float("inf"), "got inf"),
        ("alpha", "16", "got '16'"),
        ("dropout", -0.1, "got -0.1"),
        ("dropout", 1.0, "got 1.0"),
        ("init", "xavier", "got 'xavier'"),
        ("rslora", "yes", "got 'yes'"),
        ("targets", [], "empty list"),
        ("targets", ["query", ""], "got ''"),
        ("targets", "query(", "'query('"),
        ("targets", 5, "got 5"),
        ("exclude", [3], "got 3"),
    ],
)
def test_bad_values_raise_config_error_naming_the_value(
    field: str, value: object, named: str
) -> None:
    with pytest.raises(ConfigError) as info:
        AdapterSpec(**{field: value})  # type: ignore[arg-type]
    assert field in str(info.value) and named in str(info.value)


def test_round_trip_through_dict() -> None:
    spec = AdapterSpec(
        rank=4, alpha=8, targets=r".*fc\d", dropout=0.1, init="gaussian", rslora=True
    )
    assert AdapterSpec.from_dict(spec.to_dict()) == spec


def test_from_dict_names_unknown_fields() -> None:
    with pytest.raises(ConfigError, match="lora_r"):
        AdapterSpec.from_dict({"rank": 4, "lora_r": 4})

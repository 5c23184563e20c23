"""Target matching follows PEFT's rules; no match or a non-Linear match is a clear error."""

from __future__ import annotations

import pytest

import mlra
from mlra import AdapterSpec
from mlra.errors import ConfigError, TargetNotFoundError


@pytest.mark.parametrize(
    ("targets", "exclude", "expected"),
    [
        (["fc1"], (), ["fc1"]),
        (["fc2"], (), ["block.fc2"]),  # suffix after a dot
        (["block.fc2", "out"], (), ["block.fc2", "out"]),
        (r".*fc\d", (), ["fc1", "block.fc2"]),  # a regex matches the full name
        (r"fc\d", (), ["fc1"]),  # ... the full name, not a part of it
        (["fc1", "fc2", "out"], ["out"], ["fc1", "block.fc2"]),
        (r".*", r"out", ["fc1", "block.fc2"]),  # a regex skips non-Linear containers
    ],
)
def test_matching_rules(tiny_mlp, targets, exclude, expected) -> None:  # type: ignore[no-untyped-def]
    spec = AdapterSpec(rank=2, targets=targets, exclude=exclude)
    assert mlra.add_adapter(tiny_mlp, "a", spec) == expected


def test_a_partial_name_does_not_match(tiny_mlp) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TargetNotFoundError) as info:
        mlra.add_adapter(tiny_mlp, "a", AdapterSpec(targets=["c2"]))
    message = str(info.value)
    assert "'c2'" in message and "fc1" in message and "block.fc2" in message


def test_a_non_linear_target_is_refused(tiny_mlp) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="'block' is a Block"):
        mlra.add_adapter(tiny_mlp, "a", AdapterSpec(targets=["block"]))


def test_bert_query_value(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    names = mlra.add_adapter(tiny_bert, "a", AdapterSpec(rank=2))
    assert names == [
        f"encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")
    ]
    # a second adapter on overlapping layers shares the wrappers
    mlra.add_adapter(tiny_bert, "b", AdapterSpec(rank=2, targets=r".*\.0\.attention\.self\.\w+"))
    layers = mlra.adapters.lowrank_layers(tiny_bert)
    assert len(layers) == 5
    assert sorted(layers["encoder.layer.0.attention.self.query"].specs) == ["a", "b"]

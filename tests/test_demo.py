"""`mlra demo` end to end on the real packaged model and data (a short run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mlra


@pytest.mark.integration
def test_demo_trains_saves_and_reloads_in_a_fresh_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlra.cli import main

    command = ["demo", "--steps", "3", "--max-rows", "100", "--out", str(tmp_path), "--json"]
    assert main(command) == 0  # the command's entry point; the demo reloads in a fresh process
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    # the fresh process predicted exactly what the trained model did (the demo checks each row)
    assert result["reloaded"] == result["adapted"]
    assert result["test_rows"] + result["train_rows"] == 100
    assert 0 < result["trainable_params"] < 0.01 * result["base_params"]
    assert result["artifact_bytes"] < 0.01 * result["base_model_bytes"]
    manifest = mlra.inspect_adapter(result["artifact"])  # hashes verify
    assert manifest.name == "apple" and manifest.modules_to_save == ("head",)
    assert manifest.metadata["adapted"] == result["adapted"]

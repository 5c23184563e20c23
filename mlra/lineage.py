"""Where a trained adapter came from: code commit, parameters, data versions, library versions.

Training writes these into the artifact's metadata and the registry puts them in the model
version's tags; both compute them here, so a hash means the same thing wherever it appears.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlra._hashing import canonical_json, sha256_hex
from mlra.errors import ConfigError, DataError

__all__ = [
    "DatasetRef",
    "data_hash",
    "dataset_ref",
    "dvc_md5",
    "dvc_outs",
    "git_commit",
    "library_versions",
    "md5_file",
    "params_hash",
    "plain",
]


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str:
    """``HEAD``'s commit, with ``-dirty`` when tracked files changed; ``unknown`` outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True,
            timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def plain(section: object) -> Any:
    """A params dataclass as plain JSON data (tuples as lists, dates as ISO strings)."""
    data = dataclasses.asdict(section) if dataclasses.is_dataclass(section) else section  # type: ignore[arg-type]
    return json.loads(json.dumps(data, default=str))


def params_hash(params: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of parameter sections (plain data or dataclasses)."""
    return sha256_hex(canonical_json({k: plain(v) for k, v in params.items()}))


def md5_file(path: Path) -> str:
    """The md5 DVC records for a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dvc_outs(lock: str | os.PathLike[str] = "dvc.lock") -> dict[str, str]:
    """Output path -> md5 from ``dvc.lock`` (empty when there is none)."""
    lock = Path(lock)
    if not lock.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {lock}: {exc}") from exc
    outs: dict[str, str] = {}
    for stage in (data.get("stages") or {}).values():
        for out in (stage or {}).get("outs") or []:
            if isinstance(out, Mapping) and "path" in out and "md5" in out:
                outs[os.path.normpath(str(out["path"]))] = str(out["md5"])
    return outs


def dvc_md5(path: str | os.PathLike[str], lock: str | os.PathLike[str] = "dvc.lock") -> str | None:
    """DVC's md5 of ``path``: of the ``dvc.lock`` output that is or contains it; else None."""
    rel = os.path.normpath(str(path))
    for out, md5 in sorted(dvc_outs(lock).items(), key=lambda kv: -len(kv[0])):
        if rel == out or rel.startswith(out.rstrip("/") + "/"):
            return md5
    return None


def data_hash(prepared_dir: str | os.PathLike[str]) -> str:
    """sha256 over the prepared splits' content hashes (from their ``manifest.json``).

    The same bytes give the same hash wherever they lie; :func:`dvc_md5` gives DVC's own md5 of
    the folder when ``dvc repro`` produced it.
    """
    path = Path(prepared_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = {name: split["sha256"] for name, split in manifest["splits"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"cannot read the split hashes in {path}: {exc}; run `mlra prepare`"
        ) from exc
    return sha256_hex(canonical_json(files))


def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide what a trained adapter computes."""
    from importlib.metadata import PackageNotFoundError, version

    from mlra import __version__

    found = {"mlra": __version__, "python": platform.python_version()}
    for package in ("torch", "transformers", "lightning", "safetensors"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


@dataclasses.dataclass(frozen=True)
class DatasetRef:
    """A dataset a run used, identified by its DVC hash (``digest``, at most 36 characters)."""

    name: str  # e.g. "train", "golden"
    path: str  # where it lives, relative to the project
    digest: str  # the DVC md5 (``….dir`` for a directory)
    context: str = "training"  # MLflow's dataset context: training, validation, evaluation
    rows: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.digest or len(self.digest) > 36:
            raise ConfigError(
                f"dataset {self.name!r}: needs a name and a digest of 1-36 characters "
                f"(a DVC md5), got {self.digest!r}"
            )


def dataset_ref(
    path: str | os.PathLike[str],
    name: str | None = None,
    context: str = "training",
    lock: str | os.PathLike[str] = "dvc.lock",
) -> DatasetRef:
    """A :class:`DatasetRef` for ``path`` with its DVC hash.

    The hash is the one ``dvc.lock`` records for ``path`` or for the DVC output that contains it
    (a directory's ``….dir`` hash); without a lock entry, a file's md5 (what DVC would record) or,
    for a directory, an md5 over its files' md5s (suffix ``.mlra``: not DVC's own).
    """
    target = Path(path)
    recorded = dvc_outs(lock)
    rel = os.path.normpath(str(path))
    for out, md5 in sorted(recorded.items(), key=lambda kv: -len(kv[0])):
        if rel == out or rel.startswith(out.rstrip("/") + "/"):
            return DatasetRef(name or target.stem, rel, md5, context)
    if target.is_file():
        return DatasetRef(name or target.stem, rel, md5_file(target), context)
    if target.is_dir():
        listing = "".join(
            f"{p.relative_to(target).as_posix()}\0{md5_file(p)}\n"
            for p in sorted(target.rglob("*"))
            if p.is_file()
        )
        md5 = hashlib.md5(listing.encode(), usedforsecurity=False).hexdigest()
        return DatasetRef(name or target.name, rel, md5 + ".mlra", context)
    raise ConfigError(f"dataset {path}: no such file or directory, and no entry in {lock}")

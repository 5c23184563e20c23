"""A disk cache of the frozen base's features that do not change between modular passes.

Every modular pass (:func:`mlra.training.train_modules`) runs the frozen base over the source rows
(the base head's features and the router's) and over the rows of the modules it does not train
(the router's features). Those are functions of the base weights and the token ids alone, and a
weekly retrain that touches one module would otherwise spend most of its time recomputing them.

The cache keeps them in ``<modules.out_dir>/.cache/<key>.safetensors``. The key is the sha256 of
everything the features depend on: the base fingerprint (:func:`mlra.router.base_fingerprint`),
the sha256 of the token ids (which covers the texts, the tokenizer and ``max_length``), the layer,
the pooling, whether the model's own embeddings are included, the batch size, the device type, the
dtype, the torch version and its thread count. A file is used only when its recorded key and the
sha256 of its tensor bytes both match; anything else (a missing, foreign, truncated or edited
file) is recomputed and rewritten. So a cached pass computes exactly what an uncached pass would,
bit for bit, in the same environment. The least recently used files beyond ``max_files`` are
deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import torch

from mlra._hashing import canonical_json, sha256_hex
from mlra.classifier import SentenceClassifier
from mlra.router import router_features

__all__ = ["CACHE_DIR", "FeatureCache"]

CACHE_DIR: Final = ".cache"  # under modules.out_dir
FORMAT: Final = 1
BATCH_SIZE: Final = 64  # router_features' batch size: part of the key (padding shapes)


class FeatureCache:
    """:func:`mlra.router.router_features` of a model, read from ``folder`` when it was computed
    before with the same inputs (``folder`` None: always computed, nothing written).

    ``hits`` and ``misses`` count the calls answered from disk and computed."""

    def __init__(
        self,
        folder: str | Path | None,
        model: SentenceClassifier,
        tokenizer: Any,
        *,
        fingerprint: str,
        layer: int,
        max_length: int,
        max_files: int = 64,
    ) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.model, self.tokenizer = model, tokenizer
        self.fingerprint, self.layer, self.max_length = fingerprint, layer, max_length
        self.max_files = max_files
        self.hits = self.misses = 0

    def key(self, texts: Sequence[str], embed: bool) -> str:
        """The hex sha256 naming the features of ``texts`` (see the module docstring)."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        tokens = hashlib.sha256(canonical_json(ids)).hexdigest()
        param = next(self.model.parameters())
        return sha256_hex(
            canonical_json(
                {
                    "format": FORMAT,
                    "base": self.fingerprint,
                    "tokens": tokens,
                    "rows": len(texts),
                    "layer": self.layer,
                    "pooling": self.model.pooling,
                    "embed": embed,
                    "batch_size": BATCH_SIZE,
                    "device": param.device.type,
                    "dtype": str(param.dtype),
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                }
            )
        )

    def features(
        self, texts: Sequence[str], *, embed: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The router's features of ``texts`` and, with ``embed``, the model's own pooled
        embeddings: from the cache when a file with this key verifies, else computed (and
        written)."""
        if self.folder is None:
            self.misses += 1
            return self._compute(texts, embed)
        key = self.key(texts, embed)
        path = self.folder / f"{key}.safetensors"
        found = _read(path, key, embed)
        if found is not None:
            self.hits += 1
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: kept by the eviction below
            return found
        self.misses += 1
        routed, embedded = self._compute(texts, embed)
        _write(path, key, routed, embedded)
        self._evict()
        return routed, embedded

    def _compute(
        self, texts: Sequence[str], embed: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return router_features(self.model, self.tokenizer, texts, self.layer, embed=embed,
                               batch_size=BATCH_SIZE, max_length=self.max_length)  # fmt: skip

    def _evict(self) -> None:
        """Delete the least recently used files beyond ``max_files``."""
        assert self.folder is not None
        files = sorted(self.folder.glob("*.safetensors"), key=_mtime, reverse=True)
        for old in files[self.max_files :]:
            old.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, shapes and bytes (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _read(path: Path, key: str, embed: bool) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The cached tensors of ``path`` when its key and content hash verify; else None."""
    import safetensors
    import safetensors.torch

    if not path.is_file():
        return None
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = safetensors.torch.load_file(str(path))
    except (OSError, ValueError, RuntimeError, safetensors.SafetensorError):
        return None
    names = {"routed", "embedded"} if embed else {"routed"}
    if meta.get("key") != key or set(tensors) != names or meta.get("sha256") != _digest(tensors):
        return None
    return tensors["routed"], tensors.get("embedded")


def _write(path: Path, key: str, routed: torch.Tensor, embedded: torch.Tensor | None) -> None:
    """Write the tensors with their key and content hash (atomically); a failure to write only
    costs the next pass a recomputation."""
    import safetensors.torch

    tensors = {"routed": routed.contiguous()}
    if embedded is not None:
        tensors["embedded"] = embedded.contiguous()
    meta = {"key": key, "sha256": _digest(tensors), "format": str(FORMAT)}
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)

"""The candidate folder ``mlra train`` writes and evaluation and the registry read: one owner for
its layout.

::

    <train.out_dir>/
      adapter/                 the mlra adapter artifact, with the classification head
      base_head.safetensors    the no-adaptation head (what "base" means in evaluation)

The base head's sha256 goes into the adapter's manifest metadata, so the one verified manifest
covers both files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mlra._hashing import sha256_hex
from mlra.errors import IntegrityError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mlra.artifact import Manifest
    from mlra.classifier import SentenceClassifier

__all__ = ["ADAPTER_DIR", "BASE_HEAD_FILE", "load_base_head", "save"]

ADAPTER_DIR: Final = "adapter"
BASE_HEAD_FILE: Final = "base_head.safetensors"


def save(
    model: SentenceClassifier,
    adapter_name: str,
    labels: Sequence[str],
    base_head: nn.Linear,
    out_dir: str | Path,
    metadata: Mapping[str, Any],
) -> Manifest:
    """Write ``out_dir/adapter`` (adapter ``adapter_name`` of ``model``, with ``head``) and
    ``out_dir/base_head.safetensors``; returns the adapter's manifest."""
    import safetensors.torch

    import mlra

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in base_head.state_dict().items()}
    blob = bytes(safetensors.torch.save(tensors, metadata={"format": "pt"}))
    tmp = out / (BASE_HEAD_FILE + ".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, out / BASE_HEAD_FILE)
    meta = {
        **metadata,
        "pooling": model.pooling,
        "labels": list(labels),
        "base_head": {"file": f"../{BASE_HEAD_FILE}", "sha256": sha256_hex(blob)},
    }
    return mlra.save_adapter(model, adapter_name, out / ADAPTER_DIR, metadata=meta,
                             modules_to_save=["head"], overwrite=True)  # fmt: skip


def load_base_head(
    candidate_dir: str | Path, expected_sha256: str, hidden: int, n: int
) -> torch.nn.Linear:
    """The base head of a candidate folder, checked against the sha256 its manifest records."""
    import safetensors.torch
    import torch

    path = Path(candidate_dir) / BASE_HEAD_FILE
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise IntegrityError(f"the base head {path} cannot be read: {exc}") from exc
    if sha256_hex(blob) != expected_sha256:
        raise IntegrityError(f"{path} does not match the sha256 the adapter's manifest records")
    head = torch.nn.Linear(hidden, n)
    head.load_state_dict(safetensors.torch.load(blob))
    return head

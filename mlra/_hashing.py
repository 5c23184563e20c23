"""The one canonical JSON form and sha256 helper that every hash in mlra is computed over."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "sha256_hex"]


def canonical_json(data: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8, no NaN/inf: equal data always gives equal bytes."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def sha256_hex(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()

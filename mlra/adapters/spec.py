"""``AdapterSpec`` lives in :mod:`mlra.spec` (pure Python, no torch), so that
:mod:`mlra.config` can nest it without importing torch; re-exported here, its historical place."""

from __future__ import annotations

from mlra.spec import INITS, AdapterSpec, Init, Targets

__all__ = ["INITS", "AdapterSpec", "Init", "Targets"]

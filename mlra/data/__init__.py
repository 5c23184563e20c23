"""Data: the tweet corpus, stable splits, simulated field feedback and its ingestion.

Pandas is imported lazily by the functions that need it, so ``import mlra.data`` stays cheap.
"""

from __future__ import annotations

from mlra.data.source import LABELS, OTHER_DOMAIN, SOURCE_DOMAIN, TARGET_DOMAINS, load_tweets

__all__ = ["LABELS", "OTHER_DOMAIN", "SOURCE_DOMAIN", "TARGET_DOMAINS", "load_tweets"]

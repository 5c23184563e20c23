"""The adapter layer kinds, importable from their historical place.

``AdapterLayer`` (base.py) is the shared adapter-holding base; one small class per layer kind:
``LowRankLinear`` and ``LowRankConv1D`` (linear.py), ``LowRankConv`` (conv.py),
``LowRankEmbedding`` (embedding.py) and ``LowRankMultiheadAttention`` (attention.py). Request
settings live in state.py.
"""

from __future__ import annotations

from mlra.adapters.attention import LowRankMultiheadAttention
from mlra.adapters.base import AdapterLayer
from mlra.adapters.conv import LowRankConv
from mlra.adapters.embedding import LowRankEmbedding
from mlra.adapters.linear import LowRankConv1D, LowRankLinear
from mlra.adapters.state import DISABLED, LayerRoute, overrides

__all__ = [
    "DISABLED",
    "AdapterLayer",
    "LayerRoute",
    "LowRankConv",
    "LowRankConv1D",
    "LowRankEmbedding",
    "LowRankLinear",
    "LowRankMultiheadAttention",
    "overrides",
]

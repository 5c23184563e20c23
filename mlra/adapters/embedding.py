"""Embedding kind: ``nn.Embedding``.

PEFT's layout: ``lora_embedding_A`` (r × vocabulary) and ``lora_embedding_B`` (dim × r); a token's
update is ``B A[:, token]``. Here A and B are held as bias-free ``nn.Linear`` weights of those
shapes (so every kind reads ``A(name).weight``); the artifact writes PEFT's names. As in PEFT, A
starts at zero and B random, and the adapter has no dropout (the input is token ids).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlra.adapters.base import AdapterLayer, expand_rows, tensor_of
from mlra.adapters.state import LayerRoute

__all__ = ["LowRankEmbedding"]


class LowRankEmbedding(AdapterLayer):
    """Wraps one ``nn.Embedding``."""

    kind = "embedding"

    @classmethod
    def features(cls, base: nn.Module) -> tuple[int, int]:
        vocabulary, dim = tensor_of(base).shape
        return int(vocabulary), int(dim)

    def reset(self, name: str) -> None:
        with torch.no_grad():
            nn.init.zeros_(self.a_weight(name))
            nn.init.normal_(self.b_weight(name))

    def _lookup(self, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        assert isinstance(base, nn.Embedding)
        return F.embedding(ids, table, padding_idx=base.padding_idx)

    def lowrank(self, x: torch.Tensor, name: str) -> torch.Tensor:
        h = self._lookup(x, self.a_weight(name).T)  # [..., r]
        return h @ self.b_weight(name).T  # [..., dim]

    def delta(self, name: str) -> torch.Tensor:
        return (self.b_weight(name).float() @ self.a_weight(name).float()).T  # [vocab, dim]

    def routed(self, x: torch.Tensor, route: LayerRoute) -> torch.Tensor:
        """Every row's tokens looked up in its own adapter's A, then one batched matmul."""
        index = expand_rows(route, x)
        if not route.names:
            return torch.zeros((), device=x.device)
        rank = max(self.specs[n].rank for n in route.names)
        vocabulary, dim = self.features(self.base_layer)
        dtype = self.a_weight(route.names[0]).dtype
        a_all = torch.stack(
            [F.pad(self.a_weight(n).T, (0, rank - self.specs[n].rank)) for n in route.names]
            + [torch.zeros(vocabulary, rank, dtype=dtype, device=x.device)]
        )  # [K+1, vocab, r]
        b_all = torch.stack(
            [
                F.pad(self.b_weight(n).T * self.scaling[n], (0, 0, 0, rank - self.specs[n].rank))
                for n in route.names
            ]
            + [torch.zeros(rank, dim, dtype=dtype, device=x.device)]
        )  # [K+1, r, dim]
        ids = x.movedim(route.batch_dim, 0)
        rows = index.view([-1] + [1] * (ids.dim() - 1)).expand_as(ids)
        h = a_all[rows, ids].reshape(ids.shape[0], -1, rank)  # [batch, tokens, r]
        out = torch.bmm(h, b_all[index])  # [batch, tokens, dim]
        return out.reshape(*ids.shape, dim).movedim(0, route.batch_dim)

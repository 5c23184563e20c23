"""The frozen-prefix cache: the adapter-free leading layers of the frozen base run once per row,
not once per epoch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from mlra.classifier import SentenceClassifier
from mlra.training.data import _Collate

if TYPE_CHECKING:
    pass


class FrozenPrefixCache:
    """The hidden states after the first ``layers`` encoder layers, computed once per row.

    When an adapter sits only in upper layers, the layers below it are frozen and compute the same
    function every epoch (:func:`mlra.classifier.frozen_prefix` says how many). Their output is
    computed here once, without autograd, every row at its own length (no padding stored), and
    each training step then runs only the layers from ``layers`` up. Rows are computed in a fixed
    order (by length, in batches of ``batch_size``), independent of the training sampler, so a
    resumed run rebuilds exactly the same cache.
    """

    def __init__(
        self,
        model: SentenceClassifier,
        layers: int,
        ids: Sequence[Sequence[int]],
        *,
        pad_id: int,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
    ) -> None:
        self.layers = layers
        lengths = [len(row) for row in ids]
        self.lengths = torch.tensor(lengths, dtype=torch.long, device=device)
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths  # first token of each row
        parts: list[torch.Tensor] = [torch.empty(0)] * len(ids)
        order = sorted(range(len(ids)), key=lambda i: lengths[i])
        collate = _Collate(pad_id)
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                pick = order[start : start + batch_size]
                batch = collate([(i, list(ids[i]), 0) for i in pick])
                mask = batch["attention_mask"].to(device)
                hidden = model.hidden_after(batch["input_ids"].to(device), mask, layers)
                for k, i in enumerate(pick):
                    parts[i] = hidden[k, : lengths[i]]
        self.flat = torch.cat(parts) if parts else torch.empty(0)  # [all tokens, hidden]

    @property
    def nbytes(self) -> int:
        return self.flat.numel() * self.flat.element_size()

    def gather(self, rows: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The cached hidden states of ``rows``, padded like ``attention_mask`` (zeros where it is
        0: padded positions never reach a valid one, as attention and pooling mask them out)."""
        rows = rows.to(self.lengths.device)
        lengths = self.lengths[rows]  # [batch]
        width = attention_mask.shape[1]
        pos = torch.arange(width, device=rows.device)  # [width]
        valid = pos.unsqueeze(0) < lengths.unsqueeze(1)  # [batch, width]
        source = (self.offsets[rows].unsqueeze(1) + pos.unsqueeze(0))[valid]  # [valid tokens]
        out = self.flat.new_zeros(len(rows), width, self.flat.shape[-1])
        out[valid] = self.flat[source]
        return out

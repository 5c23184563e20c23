"""A sentence classifier over a transformers encoder: mean pooling and a linear head.

The encoder is the packaged MiniLM (a ``BertModel``); adapters go inside it, the head sits on the
pooled output. This is the model that the demo, training and evaluation share.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["SentenceClassifier", "batches", "predict"]


class SentenceClassifier(nn.Module):
    """``head(mean_pool(encoder(tokens)))``: sentence-transformers' pooling for MiniLM."""

    def __init__(self, encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = int(getattr(encoder, "config").hidden_size)  # noqa: B009 - a transformers model
        self.head = nn.Linear(hidden, num_labels)

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        out = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        hidden: torch.Tensor = out.last_hidden_state  # [batch, tokens, hidden]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [batch, tokens, 1]
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [batch, hidden]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits per class; takes a tokenizer's output as keywords (``model(**batch)``)."""
        logits: torch.Tensor = self.head(self.embed(input_ids, attention_mask, token_type_ids))
        return logits


def batches(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
) -> Iterator[dict[str, torch.Tensor]]:
    """Tokenised batches in order, each padded to its own longest text (dynamic padding)."""
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            list(texts[start : start + batch_size]),
            padding="longest",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        yield {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


@torch.no_grad()
def predict(
    model: SentenceClassifier,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 64,
) -> torch.Tensor:
    """Predicted class index per text (the model is put in eval mode)."""
    model.eval()
    out = [model(**b).argmax(-1) for b in batches(tokenizer, texts, batch_size, max_length)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

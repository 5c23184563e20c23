"""A sentence classifier over a transformers encoder: pooling and a linear head.

The encoder is the packaged MiniLM (a ``BertModel``); adapters go inside it, the head sits on the
pooled output. This is the model that the demo, training and evaluation share.

Pooling is ``"mean"`` (masked mean over the tokens: sentence-transformers' pooling for MiniLM, the
default) or ``"cls"`` (the first token's hidden state).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final

import torch
from torch import nn

from mlra.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "POOLINGS",
    "SentenceClassifier",
    "batches",
    "embed_texts",
    "fit_head",
    "predict",
]

POOLINGS: Final = ("mean", "cls")


class SentenceClassifier(nn.Module):
    """``head(pool(encoder(tokens)))``; ``pooling`` is ``"mean"`` (default) or ``"cls"``."""

    def __init__(self, encoder: nn.Module, num_labels: int, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        hidden = int(getattr(encoder, "config").hidden_size)  # noqa: B009 - a transformers model
        self.head = nn.Linear(hidden, num_labels)

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The pooled sentence embedding, ``[batch, hidden]``: what the head sees."""
        out = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        hidden: torch.Tensor = out.last_hidden_state  # [batch, tokens, hidden]
        if self.pooling == "cls":
            return hidden[:, 0]
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
def embed_texts(
    model: SentenceClassifier,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 64,
) -> torch.Tensor:
    """Pooled embeddings ``[len(texts), hidden]`` in the order of ``texts`` (eval mode).

    Texts are embedded shortest first, so each batch pads to a similar length: on tweets (mean ~32
    tokens, cap 64) this roughly halves the work of padding every batch in input order.
    """
    model.eval()
    if not texts:
        return torch.empty(0, int(model.head.in_features))
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True,
                                             max_length=max_length)["input_ids"]]  # fmt: skip
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    device = next(model.parameters()).device
    parts = []
    for batch in batches(tokenizer, [texts[i] for i in order], batch_size, max_length):
        parts.append(model.embed(**{k: v.to(device) for k, v in batch.items()}).float().cpu())
    sorted_out = torch.cat(parts)
    out = torch.empty_like(sorted_out)
    out[torch.tensor(order)] = sorted_out
    return out


def fit_head(
    head: nn.Linear, features: torch.Tensor, labels: torch.Tensor, *, l2: float = 1e-4
) -> None:
    """Fit ``head`` in place as an L2-regularised logistic regression on frozen ``features``.

    Full-batch L-BFGS converges in seconds on a few thousand rows, and the result depends only on
    the inputs (no sampling): the cheap, reproducible way to get "the base model with a head".
    """
    if features.shape[0] != labels.shape[0] or features.shape[0] == 0:
        raise ValueError(
            f"fit_head needs as many labels as feature rows (> 0), got {features.shape[0]} rows "
            f"and {labels.shape[0]} labels"
        )
    features = features.to(head.weight.dtype)
    optimiser = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=200, history_size=20)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(head(features), labels) + l2 * head.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)


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

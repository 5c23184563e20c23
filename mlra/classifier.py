"""A sentence classifier over a transformers encoder: pooling and a linear head.

The encoder is the packaged MiniLM (a ``BertModel``); adapters go inside it, the head sits on the
pooled output. This is the model that the demo, training and evaluation share.

Pooling is ``"mean"`` (masked mean over the tokens: sentence-transformers' pooling for MiniLM, the
default) or ``"cls"`` (the first token's hidden state).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import torch
from torch import nn

from mlra.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "POOLINGS",
    "SentenceClassifier",
    "adapter_free_layers",
    "batches",
    "embed_texts",
    "embed_texts_per_setting",
    "fit_head",
    "frozen_prefix",
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
        return self.pool(out.last_hidden_state, attention_mask)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[batch, tokens, hidden]`` → ``[batch, hidden]`` by the model's pooling."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [batch, tokens, 1]
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [batch, hidden]

    # -- the encoder in two parts (for the frozen-prefix cache) --------------------------------

    def _layers(self) -> nn.ModuleList:
        layers = self.encoder.get_submodule("encoder.layer")
        assert isinstance(layers, nn.ModuleList)
        return layers

    def _layer_mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """The mask BertModel hands its layers (built the way ``BertModel.forward`` builds it)."""
        from transformers.masking_utils import create_bidirectional_mask

        config = getattr(self.encoder, "config")  # noqa: B009 - a transformers model
        return create_bidirectional_mask(
            config=config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    def hidden_after(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layers: int,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The encoder's hidden states after its first ``layers`` layers, ``[batch, tokens,
        hidden]`` (``layers`` 0: the embeddings' output). Followed by :meth:`embed_from` this is
        :meth:`embed`."""
        embeddings = self.encoder.get_submodule("embeddings")
        hidden: torch.Tensor = embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        mask = self._layer_mask(hidden, attention_mask)
        for layer in self._layers()[:layers]:
            hidden = layer(hidden, mask)
        return hidden

    def hidden_between(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int
    ) -> torch.Tensor:
        """The hidden states after layer ``stop`` from those after layer ``start`` (see
        :meth:`hidden_after`): only layers ``start … stop - 1`` run. ``hidden_after(…, start)``
        followed by this is ``hidden_after(…, stop)``, bit for bit (the same layers on the same
        tensors)."""
        mask = self._layer_mask(hidden, attention_mask)
        for layer in self._layers()[start:stop]:
            hidden = layer(hidden, mask)
        return hidden

    def embed_from(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int
    ) -> torch.Tensor:
        """The pooled embedding from the hidden states after layer ``start`` (see
        :meth:`hidden_after`): only layers ``start, start + 1, …`` run."""
        mask = self._layer_mask(hidden, attention_mask)
        for layer in self._layers()[start:]:
            hidden = layer(hidden, mask)
        return self.pool(hidden, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits per class; takes a tokenizer's output as keywords (``model(**batch)``)."""
        logits: torch.Tensor = self.head(self.embed(input_ids, attention_mask, token_type_ids))
        return logits


def frozen_prefix(model: SentenceClassifier) -> int:
    """How many leading encoder layers compute a fixed function while ``model`` trains.

    Those layers' output can be computed once per row and reused every epoch (the frozen-prefix
    cache of :mod:`mlra.training`): it holds for the first ``k`` layers when nothing in the
    embeddings or those layers requires grad, none of them carries an adapter, and none has an
    active dropout (``p > 0`` in training mode). 0 for an encoder that is not a transformers
    ``BertModel`` (the only layout the two-part forward knows).
    """
    from transformers import BertModel

    encoder = model.encoder
    if not isinstance(encoder, BertModel) or encoder.config.is_decoder:
        return 0

    def fixed(module: nn.Module) -> bool:
        from mlra.adapters.layer import AdapterLayer

        return not any(p.requires_grad for p in module.parameters()) and not any(
            isinstance(m, AdapterLayer) or (isinstance(m, nn.Dropout) and m.training and m.p > 0)
            for m in module.modules()
        )

    if not fixed(encoder.embeddings):
        return 0
    count = 0
    for layer in model._layers():
        if not fixed(layer):
            break
        count += 1
    return count


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
    order = _length_order(tokenizer, texts, max_length)
    device = next(model.parameters()).device
    parts = []
    for batch in batches(tokenizer, [texts[i] for i in order], batch_size, max_length):
        parts.append(model.embed(**{k: v.to(device) for k, v in batch.items()}).float().cpu())
    return _in_input_order(torch.cat(parts), order)


def adapter_free_layers(model: SentenceClassifier) -> int:
    """How many leading encoder layers hold no adapter: whatever adapters are active, those
    layers compute the same function (0 for an encoder that is not a ``BertModel``)."""
    from transformers import BertModel

    from mlra.adapters.layer import AdapterLayer

    encoder = model.encoder
    if not isinstance(encoder, BertModel) or encoder.config.is_decoder:
        return 0
    if any(isinstance(m, AdapterLayer) for m in encoder.embeddings.modules()):
        return 0  # an adapter on the embeddings changes every layer's input
    count = 0
    for layer in model._layers():
        if any(isinstance(m, AdapterLayer) for m in layer.modules()):
            break
        count += 1
    return count


@torch.no_grad()
def embed_texts_per_setting(
    model: SentenceClassifier,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    settings: Sequence[str | None],
    *,
    batch_size: int = 64,
    max_length: int = 64,
) -> list[torch.Tensor]:
    """:func:`embed_texts` under each adapter setting (an adapter name, or None for the base
    model), in one pass over ``texts``: the layers below the lowest adapter
    (:func:`adapter_free_layers`) run once per batch and their output feeds every setting.
    With adapters only in upper layers, scoring base, candidate and champion costs little more
    than scoring one of them."""
    import mlra

    model.eval()
    if not texts:
        return [torch.empty(0, int(model.head.in_features)) for _ in settings]
    shared = adapter_free_layers(model)
    order = _length_order(tokenizer, texts, max_length)
    device = next(model.parameters()).device
    parts: list[list[torch.Tensor]] = [[] for _ in settings]
    for batch in batches(tokenizer, [texts[i] for i in order], batch_size, max_length):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        hidden = model.hidden_after(ids, mask, shared) if shared else None
        for j, name in enumerate(settings):
            if name is not None:
                mlra.set_active(model, name)
            with mlra.disabled(model) if name is None else contextlib.nullcontext():
                emb = (
                    model.embed(ids, mask)
                    if hidden is None
                    else model.embed_from(hidden, mask, shared)
                )
            parts[j].append(emb.float().cpu())
    return [_in_input_order(torch.cat(chunks), order) for chunks in parts]


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
    """Predicted class index per text, in the order of ``texts`` (the model is put in eval mode).

    Like :func:`embed_texts`, texts run shortest first so that each batch pads to a similar length.
    """
    model.eval()
    if not texts:
        return torch.empty(0, dtype=torch.long)
    order = _length_order(tokenizer, texts, max_length)
    device = next(model.parameters()).device
    parts = [
        model(**{k: v.to(device) for k, v in b.items()}).argmax(-1).cpu()
        for b in batches(tokenizer, [texts[i] for i in order], batch_size, max_length)
    ]
    return _in_input_order(torch.cat(parts), order)


def _in_input_order(rows: torch.Tensor, order: Sequence[int]) -> torch.Tensor:
    """``rows`` computed in ``order`` (row k is input ``order[k]``), put back in input order."""
    out = torch.empty_like(rows)
    out[torch.tensor(order)] = rows
    return out


def _length_order(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> list[int]:
    """Indices of ``texts`` by token count, shortest first (stable)."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return sorted(range(len(texts)), key=lambda i: len(ids[i]))

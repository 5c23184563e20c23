"""The sentence classifier: masked mean pooling, and adapters inside its encoder."""

from __future__ import annotations

import torch

import mlra
from mlra.classifier import SentenceClassifier


def test_padding_does_not_change_a_sentence_embedding(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    model = SentenceClassifier(tiny_bert, 3).eval()
    ids = torch.randint(1, 64, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        alone = model.embed(ids, torch.ones_like(ids))
        with_padding = model.embed(padded, mask)
    torch.testing.assert_close(with_padding, alone, atol=1e-5, rtol=1e-5)


def test_adapters_reach_the_encoder_through_the_wrapper(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    model = SentenceClassifier(tiny_bert, 3)
    names = mlra.add_adapter(model, "a", mlra.AdapterSpec(rank=2))
    assert names[0] == "encoder.encoder.layer.0.attention.self.query"
    trainable = mlra.mark_trainable(model, "a", also=["head"])
    assert len(trainable) == 2 * len(names) + 2  # A and B per layer, head weight and bias

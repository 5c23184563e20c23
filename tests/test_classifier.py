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


def test_cls_pooling_takes_the_first_token_and_bad_pooling_is_refused(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from mlra.errors import ConfigError

    model = SentenceClassifier(tiny_bert, 3, pooling="cls").eval()
    ids = torch.randint(1, 64, (2, 5))
    with torch.no_grad():
        hidden = tiny_bert(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        torch.testing.assert_close(model.embed(ids, torch.ones_like(ids)), hidden[:, 0])
    with pytest.raises(ConfigError, match="pooling must be one of mean, cls, got 'max'"):
        SentenceClassifier(tiny_bert, 3, pooling="max")


def test_embed_texts_keeps_input_order_while_batching_by_length(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    from transformers import BertTokenizerFast

    from mlra.classifier import batches, embed_texts

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    texts = ["a b c a b c a", "b", "c a", "a a a a", "b c"]
    model = SentenceClassifier(tiny_bert, 3)
    got = embed_texts(model, tok, texts, batch_size=2, max_length=16)
    with torch.no_grad():
        one_by_one = torch.cat([model.embed(**b) for b in batches(tok, texts, 1, 16)])
    torch.testing.assert_close(got, one_by_one, atol=1e-5, rtol=1e-5)


def test_fit_head_separates_separable_features() -> None:
    from mlra.classifier import fit_head

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (90,), generator=g)
    features = torch.nn.functional.one_hot(labels, 3).float() * 3 + 0.1 * torch.randn(
        90, 3, generator=g
    )
    head = torch.nn.Linear(3, 3)
    fit_head(head, features, labels)
    assert bool((head(features).argmax(-1) == labels).all())

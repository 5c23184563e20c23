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


def test_one_pass_per_setting_equals_embedding_under_each_setting(tiny_bert) -> None:  # type: ignore[no-untyped-def]
    """Scoring base and two adapters in one pass (the adapter-free lower layer shared) gives what
    embedding the texts once per setting gives."""
    from mlra.classifier import adapter_free_layers, embed_texts, embed_texts_per_setting

    model = SentenceClassifier(tiny_bert, num_labels=3)
    spec = mlra.AdapterSpec(rank=4, targets=["layer.1.attention.self.query"])
    torch.manual_seed(1)
    for name in ("a", "b"):
        mlra.add_adapter(model, name, spec)
        for p in mlra.adapter_parameters(model, name):
            p.data.normal_(0.0, 0.5)  # B starts at zero: give each adapter an effect
    assert adapter_free_layers(model) == 1
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    texts = ["a b c", "b", "c a b b a c a", "a a", "b c a"]
    shared = embed_texts_per_setting(model, tokenizer, texts, [None, "a", "b"], batch_size=2)
    expected = []
    for name in (None, "a", "b"):
        if name is None:
            with mlra.disabled(model):
                expected.append(embed_texts(model, tokenizer, texts, batch_size=2))
        else:
            mlra.set_active(model, name)
            expected.append(embed_texts(model, tokenizer, texts, batch_size=2))
    for got, want in zip(shared, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(shared[1], shared[2])  # the adapters do differ

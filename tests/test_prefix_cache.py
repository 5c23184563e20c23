"""The frozen-prefix cache: layers below the lowest adapter run once per row, with the same result.

Invariants: ``hidden_after(k)`` + ``embed_from(k)`` is ``embed``; logits and gradients from cached
hidden states equal the uncached ones; nothing below the lowest adapter enters autograd; training
with the cache ends where training without it ends.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import mlra
from mlra.classifier import SentenceClassifier, frozen_prefix

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from test_training import LABELS, tiny_rows, tiny_tokenizer, tiny_train_params  # noqa: E402

from tests.conftest import make_tiny_bert  # noqa: E402

UPPER = r".*layer\.1\.attention\.self\.(query|value)"  # the tiny BERT has layers 0 and 1


def _model(targets: Any = UPPER) -> SentenceClassifier:
    model = SentenceClassifier(make_tiny_bert(), 3)
    if targets is not None:
        mlra.add_adapter(model, "a", mlra.AdapterSpec(rank=4, alpha=8.0, targets=targets))
        mlra.mark_trainable(model, "a", also=["head"])
        with torch.no_grad():  # a non-zero B, so the adapter changes the output
            for p in mlra.adapter_parameters(model, "a"):
                p.normal_(std=0.1)
    return model.eval()


def _batch(n: int = 6) -> dict[str, torch.Tensor]:
    texts, _ = tiny_rows(n, 3)
    enc = tiny_tokenizer()(texts, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def test_frozen_prefix_counts_the_leading_fixed_layers() -> None:
    assert frozen_prefix(_model(UPPER)) == 1
    assert frozen_prefix(_model(["query", "value"])) == 0
    frozen = _model(None)
    frozen.encoder.requires_grad_(False)
    assert frozen_prefix(frozen) == 2  # nothing trains in the encoder: all of it is fixed
    frozen.encoder.get_submodule("embeddings").requires_grad_(True)
    assert frozen_prefix(frozen) == 0
    dropout = _model(UPPER).train()  # the base's dropout active: the prefix is not fixed
    assert frozen_prefix(dropout) == 0


@pytest.mark.parametrize("k", [0, 1, 2])
def test_the_two_part_forward_is_the_forward(k: int) -> None:
    model, batch = _model(), _batch()
    with torch.no_grad():
        whole = model.embed(**batch)
        hidden = model.hidden_after(batch["input_ids"], batch["attention_mask"], k)
        parts = model.embed_from(hidden, batch["attention_mask"], k)
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-6)


def test_cached_logits_and_gradients_equal_the_uncached_ones() -> None:
    from mlra.training import FrozenPrefixCache

    model = _model()
    texts, labels = tiny_rows(20, 4)
    tok = tiny_tokenizer()
    ids = tok(texts)["input_ids"]
    cache = FrozenPrefixCache(model, 1, ids, pad_id=0, batch_size=7)  # other batches than below
    pick = [3, 17, 0, 9, 12]
    enc = tok([texts[i] for i in pick], padding=True, return_tensors="pt")
    y = torch.tensor([labels[i] for i in pick])
    params = mlra.adapter_parameters(model, "a") + list(model.head.parameters())

    def run(cached: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        mask = enc["attention_mask"]
        if cached:
            hidden = cache.gather(torch.tensor(pick), mask)
            logits = model.head(model.embed_from(hidden, mask, 1))
        else:
            logits = model(input_ids=enc["input_ids"], attention_mask=mask)
        nn.functional.cross_entropy(logits, y).backward()
        return logits.detach(), [p.grad.clone() for p in params if p.grad is not None]

    plain_logits, plain_grads = run(False)
    cached_logits, cached_grads = run(True)
    torch.testing.assert_close(cached_logits, plain_logits, rtol=1e-5, atol=1e-6)
    assert len(cached_grads) == len(plain_grads) == len(params)
    for c, p in zip(cached_grads, plain_grads, strict=True):
        torch.testing.assert_close(c, p, rtol=1e-4, atol=1e-6)


def test_nothing_below_the_lowest_adapter_enters_autograd() -> None:
    model, batch = _model().train(), _batch()
    from mlra.training import freeze_base_dropout

    freeze_base_dropout(model)
    seen: dict[int, bool] = {}
    layers = model.encoder.get_submodule("encoder.layer")
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out.requires_grad))
    model(**batch).sum().backward()
    assert seen == {0: False, 1: True}  # no graph (and so no backward) through layer 0


def _fit(tmp_path: Path, cache: bool) -> tuple[dict[str, torch.Tensor], dict[str, float], int]:
    import lightning as L

    from mlra.training import AdapterClassifier, TweetDataModule, fit

    upper = ("layer.1.attention.self.query", "layer.1.attention.self.value")  # suffix matches
    tp = tiny_train_params(targets=upper, cache_frozen=cache, max_epochs=2)
    L.seed_everything(0, verbose=False)
    model = SentenceClassifier(make_tiny_bert(), 3)
    module = AdapterClassifier(model, tp, LABELS, run_key="cache")
    data = TweetDataModule(
        tiny_tokenizer(), tiny_rows(96, 1), tiny_rows(32, 2),
        batch_size=tp.batch_size, max_length=tp.max_length, seed=0,
    )  # fmt: skip
    built: list[int] = []

    class Seen(L.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            built.append(len(pl_module.caches))

    trainer = fit(module, data, tp, checkpoint_dir=None, progress_bar=False, callbacks=[Seen()])
    state = {k: v.clone() for k, v in model.state_dict().items()
             if f"model.{k}" in module.trainable_keys}  # fmt: skip
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return state, metrics, max(built)


def test_training_with_the_cache_ends_where_training_without_it_ends(tmp_path: Path) -> None:
    cached, cached_metrics, caches = _fit(tmp_path, True)
    plain, plain_metrics, no_caches = _fit(tmp_path, False)
    assert (caches, no_caches) == (2, 0)  # train and val cached; none when switched off
    assert cached.keys() == plain.keys()
    for key in plain:
        torch.testing.assert_close(cached[key], plain[key], rtol=1e-4, atol=1e-5)
    assert cached_metrics["val_macro_f1"] == pytest.approx(plain_metrics["val_macro_f1"])
    assert copy.copy(cached_metrics).keys() == plain_metrics.keys()

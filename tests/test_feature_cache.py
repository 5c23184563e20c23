"""The feature cache of the modular pass (mlra.training.features) on a tiny BERT.

Invariants: a pass that reads the frozen base's features from the cache writes exactly what a
pass without the cache writes (same adapters, heads and router, bit for bit); the cache is used
only when its key and content verify (an edited file, other tokens or another base are
recomputed); without the cache nothing is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import mlra.training.features as features
from mlra.config import Params
from mlra.training import train_modules
from mlra.training.features import CACHE_DIR, FeatureCache

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from test_modular_training import fresh, mp_for, tokenizer, tp_for  # noqa: E402
from test_modular_training import prepared as prepared  # noqa: E402  (the fixture)


def _pass(params: Params, tmp: Path, out: Path, **kwargs: Any) -> Any:
    return train_modules(params.data, tp_for(tmp), mp_for(), due=["nfl"], out_dir=out,
                         log_mlflow=False, progress_bar=False, model=fresh(),
                         tokenizer=tokenizer(), **kwargs)  # fmt: skip


def _tensors(out: Path) -> dict[str, bytes]:
    """Every tensor file the pass wrote (adapters with their heads, router, base head)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.safetensors"))
            if CACHE_DIR not in p.parts}  # fmt: skip


def _manifest(result: Any) -> dict[str, Any]:
    """nfl's adapter manifest but when it was written: spec, targets, file hashes, metadata."""
    manifest = json.loads((result.modules["nfl"].adapter_dir / "manifest.json").read_text())
    return {k: v for k, v in manifest.items() if k not in ("created_at", "manifest_sha256")}


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows of every computation of features (a cache hit computes nothing)."""
    calls: list[int] = []
    real = features.router_features

    def counting(model: Any, tok: Any, texts: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(texts))
        return real(model, tok, texts, *args, **kwargs)

    monkeypatch.setattr(features, "router_features", counting)
    return calls


def test_a_cached_pass_is_bit_for_bit_an_uncached_one(
    prepared: Params, tmp_path: Path, computed: list[int]
) -> None:
    plain = _pass(prepared, tmp_path, tmp_path / "plain", feature_cache=False)
    assert not (tmp_path / "plain" / CACHE_DIR).exists()  # no cache: nothing written
    uncached = len(computed)
    assert uncached == 3  # the source rows, then apple's and claritin's (not due) for the router
    computed.clear()
    first = _pass(prepared, tmp_path, tmp_path / "c")
    assert len(computed) == 3 and len(list((tmp_path / "c" / CACHE_DIR).iterdir())) == 3
    computed.clear()
    second = _pass(prepared, tmp_path, tmp_path / "c")
    assert computed == []  # every feature read from the cache
    for result in (first, second):
        assert result.router_sha256 == plain.router_sha256
        assert _manifest(result) == _manifest(plain)
    assert _tensors(tmp_path / "c") == _tensors(tmp_path / "plain")


def test_an_edited_or_foreign_cache_file_is_recomputed(
    prepared: Params, tmp_path: Path, computed: list[int]
) -> None:
    out = tmp_path / "c"
    reference = _pass(prepared, tmp_path, out)
    source_rows = computed[0]  # the source rows come first
    files = sorted((out / CACHE_DIR).iterdir(), key=lambda p: p.stat().st_size)
    biggest = files[-1]  # the source rows' file
    blob = bytearray(biggest.read_bytes())
    blob[-3] ^= 0xFF  # one byte of a tensor
    biggest.write_bytes(bytes(blob))
    files[0].write_bytes(b"not a safetensors file")
    computed.clear()
    again = _pass(prepared, tmp_path, out)
    assert len(computed) == 2 and computed[0] == source_rows  # the damaged files, nothing else
    assert again.router_sha256 == reference.router_sha256
    assert _manifest(again) == _manifest(reference)


def test_the_key_covers_the_tokens_and_the_base() -> None:
    model, tok = fresh(), tokenizer()
    cache = FeatureCache(None, model, tok, fingerprint="a", layer=1, max_length=24)
    texts = ["my iphone feels great", "claritin made me feel awful"]
    key = cache.key(texts, embed=False)
    assert key == cache.key(list(texts), embed=False)
    assert key != cache.key(texts[::-1], embed=False)  # other rows (order matters)
    assert key != cache.key(texts, embed=True)
    assert key != FeatureCache(None, model, tok, fingerprint="b", layer=1,
                               max_length=24).key(texts, embed=False)  # fmt: skip
    assert key != FeatureCache(None, model, tok, fingerprint="a", layer=2,
                               max_length=24).key(texts, embed=False)  # fmt: skip
    short = FeatureCache(None, model, tok, fingerprint="a", layer=1, max_length=3)
    assert key != short.key(texts, embed=False)  # other token ids


def test_reads_verify_the_key(tmp_path: Path) -> None:
    model, tok = fresh(), tokenizer()
    texts = ["my iphone feels great", "claritin made me feel awful"]
    cache = FeatureCache(tmp_path, model, tok, fingerprint="a", layer=1, max_length=24)
    routed, _ = cache.features(texts)
    assert (cache.hits, cache.misses) == (0, 1)
    again, _ = cache.features(texts)
    assert (cache.hits, cache.misses) == (1, 1) and torch.equal(routed, again)
    (path,) = tmp_path.iterdir()
    other = FeatureCache(tmp_path, model, tok, fingerprint="b", layer=1, max_length=24)
    path.rename(tmp_path / f"{other.key(texts, embed=False)}.safetensors")  # a foreign key inside
    other.features(texts)
    assert (other.hits, other.misses) == (0, 1)

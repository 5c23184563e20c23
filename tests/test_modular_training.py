"""The modular pass (mlra.training.train_modules) and the router (mlra.router) on a tiny BERT.

Invariants: one pass trains every due module and nothing else (the base, the base head and the
modules not due are untouched; their folders are removed); a routed batch gives each row exactly
the logits, loss and gradients of its own module; a module's candidate folder loads with
``mlra.load_adapter`` and reproduces its logits; checkpoints hold the trainable tensors only and a
resumed run ends where the uninterrupted one does; a router folder verifies every file; the
router separates domains the frozen base tells apart.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

import mlra
from mlra.classifier import SentenceClassifier
from mlra.config import ModuleOverride, ModulesParams, Params, RouterParams
from mlra.errors import ConfigError, DataError, IntegrityError
from mlra.router import Router, fit_router, pooled_after
from mlra.training import ModularClassifier, ModularDataModule, fit, train_modules

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from test_training import LABELS, tiny_train_params  # noqa: E402

from tests.conftest import make_tiny_bert  # noqa: E402
from tests.data.synthetic import MOODS, TEMPLATES, small_params, synthetic_corpus  # noqa: E402

UPPER = ("layer.1.attention.self.query", "layer.1.attention.self.value")  # of the 2 layers
MODULES = ("nfl", "apple", "claritin")  # in data.target_domains order
TEXTS = " ".join([*TEMPLATES.values(), *MOODS.values()]).format(i="", mood="").lower()
WORDS = sorted(set(re.findall(r"[a-z]+|[@#:]", TEXTS)))  # the synthetic corpus's words


def tokenizer() -> Any:
    """A word-level tokenizer for the synthetic corpus's templates (numbers are [UNK])."""
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})


def tp_for(tmp: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = dict(targets=UPPER, max_epochs=3, max_steps=6, val_every_steps=3,
                                  checkpoint_dir=str(tmp / "ckpt"))  # fmt: skip
    return tiny_train_params(**(values | overrides))


def mp_for(**router: Any) -> ModulesParams:
    return ModulesParams(domains=MODULES, overrides=(ModuleOverride("apple", rank=2),),
                         router=RouterParams(**({"layer": 1} | router)))  # fmt: skip


def fresh() -> SentenceClassifier:
    return SentenceClassifier(make_tiny_bert(), 3)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Params:
    """Prepared synthetic splits with one ingested feedback batch in them."""
    from mlra.data.feedback import simulate
    from mlra.data.ingest import ingest
    from mlra.data.splits import prepare

    params = small_params(tmp_path_factory.mktemp("modular"))
    corpus = synthetic_corpus(60)
    ingest(simulate(params, corpus=corpus, batches=1), params.data.feedback_dir, params)
    prepare(params, corpus=corpus)
    return params


@pytest.fixture(scope="module")
def passes(prepared: Params, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two passes into one folder: every module, then nfl and claritin only."""
    tmp = tmp_path_factory.mktemp("passes")
    out, tok = tmp / "modules", tokenizer()
    run = dict(out_dir=out, log_mlflow=False, progress_bar=False, tokenizer=tok)
    first = train_modules(prepared.data, tp_for(tmp), mp_for(), model=fresh(), **run)
    apple = json.loads((out / "apple" / "adapter" / "manifest.json").read_text())
    model = fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    second = train_modules(prepared.data, tp_for(tmp), mp_for(), due=["claritin", "nfl"],
                           model=model, **run)  # fmt: skip
    return {"out": out, "first": first, "second": second, "apple_manifest": apple,
            "model": model, "before": before}  # fmt: skip


# -- the pass -----------------------------------------------------------------------------------


def test_a_pass_writes_the_due_modules_the_router_and_removes_stale_folders(
    passes: dict[str, Any], prepared: Params
) -> None:
    out, first, second = passes["out"], passes["first"], passes["second"]
    assert sorted(first.modules) == sorted(MODULES) and first.kept == []
    assert passes["apple_manifest"]["spec"]["rank"] == 2  # its override
    assert list(second.modules) == ["nfl", "claritin"] and second.kept == ["apple"]
    assert sorted(p.name for p in out.iterdir()) == [".cache", "claritin", "modules.json", "nfl",
                                                     "router"]  # fmt: skip
    summary = json.loads((out / "modules.json").read_text())
    assert summary["trained"] == ["nfl", "claritin"] and summary["kept"] == ["apple"]
    assert summary["steps"] == second.steps == 6 and summary["router"] == "router"
    assert summary["router_sha256"] == second.router_sha256
    train = pd.read_parquet(Path(prepared.data.prepared_dir) / "train.parquet")
    feedback = train[train["origin"] == "feedback"]["domain"].value_counts()
    assert summary["feedback_rows_by_domain"] == {m: int(feedback.get(m, 0)) for m in MODULES}
    assert sum(summary["feedback_rows_by_domain"].values()) > 0
    for name, result in second.modules.items():
        manifest = mlra.inspect_adapter(result.adapter_dir)  # verifies every file
        assert manifest.name == name and manifest.sha256 == result.adapter_sha256
        meta = manifest.metadata
        assert (meta["module"], meta["domain"]) == (name, name)
        assert meta["feedback_rows"] == int(feedback.get(name, 0))
        assert meta["trained_with"] == ["nfl", "claritin"]
        assert meta["router_sha256"] == second.router_sha256
        assert meta["rows"]["train"] == summary["rows_by_module"][name] > 0
        assert set(meta["val_metrics"]) == {"val_macro_f1", "val_accuracy"}
        assert meta["data_hash"] and meta["params_hash"] and meta["git_commit"]


def test_a_pass_changes_only_the_modules_adapters_and_heads(passes: dict[str, Any]) -> None:
    out, model, before = passes["out"], passes["model"], passes["before"]
    assert mlra.adapter_names(model) == ["nfl", "claritin"]  # apple, not due, was never added
    after = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items()
             if ".lora_" not in k}  # fmt: skip
    changed = [k for k in before if k != "head.weight" and k != "head.bias"
               and not torch.equal(before[k], after[k])]  # fmt: skip
    assert changed == []  # the frozen base did not move
    _, base_head = Router.load(out / "router")
    assert torch.equal(model.head.weight, base_head.weight)  # the base head, as saved
    heads = {}
    for name in ("nfl", "claritin"):
        probe = fresh()
        assert mlra.load_adapter(probe, out / name / "adapter") == name  # strict: hashes, base
        assert any(bool(p.abs().sum() > 0) for k, p in probe.named_parameters() if ".lora_B." in k)
        assert not torch.equal(probe.head.weight, base_head.weight)  # its own head trained
        heads[name] = probe.head.weight
    assert not torch.equal(heads["nfl"], heads["claritin"])


def _perturbed(specs: dict[str, mlra.AdapterSpec], tmp: Path) -> ModularClassifier:
    torch.manual_seed(5)
    module = ModularClassifier(fresh(), tp_for(tmp), specs, LABELS)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.normal_(std=0.3)  # every module visibly different from the base
    return module


def _batch(n: int = 6) -> dict[str, torch.Tensor]:
    texts = [f"my iphone {i} feels great" if i % 2 else "claritin dose made me feel awful i guess"
             for i in range(n)]  # fmt: skip
    enc = tokenizer()(texts, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def test_a_routed_batch_is_each_row_through_its_own_module(tmp_path: Path) -> None:
    spec = mlra.AdapterSpec(rank=4, alpha=8.0, targets=UPPER)
    module = _perturbed({"a": spec, "b": mlra.AdapterSpec(rank=2, alpha=4.0, targets=UPPER)},
                        tmp_path)  # fmt: skip
    model, batch = module.model, _batch()
    rows = torch.tensor([0, 1, 1, 0, 1, 0])
    y = torch.tensor([0, 2, 1, 1, 0, 2])
    params = [p for p in module.parameters() if p.requires_grad]

    def grads(logits: torch.Tensor) -> list[torch.Tensor]:
        module.zero_grad()
        nn.functional.cross_entropy(logits, y).backward()
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]

    routed = module.routed_logits(batch["input_ids"], batch["attention_mask"], rows)
    routed_grads = grads(routed)
    hidden = model.hidden_after(batch["input_ids"], batch["attention_mask"], 1)
    cached = module.routed_logits(batch["input_ids"], batch["attention_mask"], rows, (hidden, 1))
    torch.testing.assert_close(cached, routed, rtol=1e-5, atol=1e-6)

    separate = torch.zeros_like(routed)
    for k, name in enumerate(module.names):  # each module alone, on its own rows
        mlra.set_active(model, name)
        pick = rows == k
        pooled = model.embed(batch["input_ids"][pick], batch["attention_mask"][pick])
        separate[pick] = module.heads[name](pooled)
    torch.testing.assert_close(routed, separate, rtol=1e-5, atol=1e-6)
    for r, s in zip(routed_grads, grads(separate), strict=True):
        torch.testing.assert_close(r, s, rtol=1e-4, atol=1e-6)

    only_a = module.routed_logits(
        batch["input_ids"], batch["attention_mask"], torch.zeros(6).long()
    )
    module.zero_grad()
    only_a.sum().backward()
    b_params = mlra.adapter_parameters(model, "b") + list(module.heads["b"].parameters())
    assert all(p.grad is None or not p.grad.any() for p in b_params)  # b learns from b's rows only


def test_a_saved_module_reproduces_its_logits(tmp_path: Path) -> None:
    from mlra.training.modular import _save_module

    spec = mlra.AdapterSpec(rank=4, alpha=8.0, targets=UPPER)
    module = _perturbed({"a": spec, "b": spec}, tmp_path)
    base_head = module.model.head
    batch = _batch()
    for k, name in enumerate(module.names):
        saved = _save_module(module, name, base_head, tmp_path / name, {"test": True})
        probe = fresh()
        assert mlra.load_adapter(probe, saved.adapter_dir) == name
        with torch.no_grad():
            expected = module.routed_logits(**batch, modules=torch.full((6,), k))
            torch.testing.assert_close(probe(**batch), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(module.model.head.weight, base_head.weight)  # the base head is back


def test_the_training_cache_gives_the_router_its_features(tmp_path: Path) -> None:
    from mlra.training.routed import _mean_per_row

    spec = mlra.AdapterSpec(rank=4, alpha=8.0, targets=UPPER)
    module = ModularClassifier(fresh(), tp_for(tmp_path), {"a": spec}, LABELS, pool_layer=1)
    texts = [f"my iphone {i} feels great" + " fine" * (i % 5) for i in range(10)]
    data = ModularDataModule(tokenizer(), (texts, [0] * 10, [0] * 10), (texts, [0] * 10, [0] * 10),
                             batch_size=4, max_length=24, seed=0)  # fmt: skip
    module.build_caches(data)
    assert module.caches["train"].layers == 1  # the layer below the adapters
    enc = tokenizer()(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = pooled_after(module.model, enc["input_ids"], enc["attention_mask"], 1)
    torch.testing.assert_close(
        _mean_per_row(module.caches["train"]), expected, rtol=1e-5, atol=1e-6
    )
    with torch.no_grad():  # above the adapters too, the router sees the base alone
        for p in mlra.adapter_parameters(module.model, "a"):
            p.normal_(std=0.3)
        above = pooled_after(module.model, enc["input_ids"], enc["attention_mask"], 2)
        plain = pooled_after(fresh(), enc["input_ids"], enc["attention_mask"], 2)
    torch.testing.assert_close(above, plain, rtol=0, atol=0)


# -- checkpoints and resume ---------------------------------------------------------------------


class _Crash(Exception):
    pass


def _fit_direct(tmp: Path, ckpt: Path, crash_at: int = -1, resume: Path | None = None) -> Any:
    """Four steps of two modules; ``crash_at``: an exception before that step (a crash)."""
    import lightning as L

    ran: list[int] = []

    class Crash(L.Callback):
        def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == crash_at:
                raise _Crash
            ran.append(trainer.global_step)

    L.seed_everything(0, verbose=False)
    tp = tp_for(tmp, max_steps=4, checkpoint_every_steps=2)
    spec = mlra.AdapterSpec(rank=4, alpha=8.0, targets=UPPER)
    module = ModularClassifier(fresh(), tp, {"a": spec, "b": spec}, LABELS, run_key="k")
    texts = [f"my iphone {i} feels great" for i in range(24)]
    texts += [f"claritin dose {i} made me feel awful" for i in range(24)]
    labels, mods = [2] * 24 + [0] * 24, [0] * 24 + [1] * 24
    data = ModularDataModule(tokenizer(), (texts, labels, mods), (texts[::4], labels[::4],
                             mods[::4]), batch_size=8, max_length=24, seed=0)  # fmt: skip
    fit(module, data, tp, checkpoint_dir=ckpt, resume=resume, progress_bar=False,
        callbacks=[Crash()])  # fmt: skip
    module.ran = ran
    return module


def test_checkpoints_hold_only_trainable_tensors_and_resume(tmp_path: Path) -> None:
    from mlra.training import resumable_checkpoint

    whole = _fit_direct(tmp_path, tmp_path / "whole")
    with pytest.raises(_Crash):
        _fit_direct(tmp_path, tmp_path / "cut", crash_at=3)
    ckpt = torch.load(tmp_path / "cut" / "last.ckpt", map_location="cpu", weights_only=False)
    keys = set(ckpt["state_dict"])
    assert keys == set(whole.trainable_keys)
    assert all(k.startswith("heads.") or ".lora_A." in k or ".lora_B." in k for k in keys)
    assert len(keys) == 2 * (2 * 2 + 2)  # per module: A, B × query, value (layer 1); its head
    assert ckpt["mlra"] == {"run_key": "k", "modules": ["a", "b"]}
    start = resumable_checkpoint(tmp_path / "cut", "k")
    assert start is not None
    resumed = _fit_direct(tmp_path, tmp_path / "cut", resume=start)
    assert whole.ran == [0, 1, 2, 3] and resumed.ran == [2, 3]  # resumed after step 2
    for (name, p), q in zip(whole.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q), name
    other = ModularClassifier(fresh(), tp_for(tmp_path), {"a": mlra.AdapterSpec(rank=4)}, LABELS)
    with pytest.raises(ConfigError, match="does not hold this model's adapter and head"):
        other.on_load_checkpoint(ckpt)


# -- the router ----------------------------------------------------------------------------------


def _router() -> tuple[Router, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 4
    domain = torch.arange(3).repeat_interleave(20)
    features = centres[domain] + torch.randn(60, 8, generator=g)
    modules = {"airline": None, "nfl": "nfl", "apple": "apple"}
    return fit_router(features, domain, list(modules), modules, 2, LABELS), features, domain


def test_router_folder_round_trip_and_tampering(tmp_path: Path) -> None:
    router, features, _ = _router()
    head = nn.Linear(8, 3)
    sha = router.save(tmp_path / "r", head, base_fingerprint="f" * 64, metadata={"seed": 0})
    assert sha == router.sha256
    loaded, loaded_head = Router.load(tmp_path / "r", expected_sha256=sha)
    assert loaded.sha256 == sha and loaded.domains == ("airline", "nfl", "apple")
    assert loaded.modules == {"airline": None, "nfl": "nfl", "apple": "apple"}
    assert (loaded.layer, loaded.labels, loaded.metadata) == (2, LABELS, {"seed": 0})
    assert loaded.base_fingerprint == "f" * 64
    assert torch.equal(loaded.probabilities(features), router.probabilities(features))
    assert torch.equal(loaded_head.weight, head.weight)
    with pytest.raises(IntegrityError, match=r"router\.json has sha256 .* not the expected"):
        Router.load(tmp_path / "r", expected_sha256="0" * 64)
    for name in ("router.safetensors", "base_head.safetensors", "router.json"):
        bad = tmp_path / f"bad-{name}"
        shutil.copytree(tmp_path / "r", bad)
        blob = bytearray((bad / name).read_bytes())
        blob[-2] ^= 1
        (bad / name).write_bytes(bytes(blob))
        with pytest.raises(IntegrityError, match=name.replace(".", r"\.")):
            Router.load(bad, expected_sha256=sha)
    (tmp_path / "r" / "base_head.safetensors").unlink()
    with pytest.raises(IntegrityError, match=r"base_head\.safetensors cannot be read"):
        Router.load(tmp_path / "r")


def test_router_choose_falls_back_below_min_confidence() -> None:
    router, features, domain = _router()
    sure = router.choose(features, 0.5, None)
    assert sure.domains == [router.domains[int(d)] for d in domain]  # separable: all right
    assert sure.modules[:20] == [None] * 20 and sure.modules[20:40] == ["nfl"] * 20
    assert not any(sure.fell_back)
    unsure = router.choose(features, 1.01, "apple")  # nothing is that sure
    assert all(unsure.fell_back) and unsure.modules == ["apple"] * 60
    assert unsure.domains == sure.domains  # the router's guess is still reported
    assert router.choose(features, 1.01, "base").modules == [None] * 60
    assert torch.allclose(unsure.confidence, router.probabilities(features).max(-1).values)
    with pytest.raises(ConfigError, match="fallback 'coachella' is not one of its modules"):
        router.choose(features, 0.5, "coachella")


def test_the_router_separates_domains(passes: dict[str, Any], prepared: Params) -> None:
    router, _ = Router.load(passes["out"] / "router", passes["second"].router_sha256)
    assert router.domains == ("airline", *MODULES) and router.layer == 1
    assert router.modules == {"airline": None, "nfl": "nfl", "apple": "apple",
                              "claritin": "claritin"}  # fmt: skip
    test = pd.read_parquet(Path(prepared.data.prepared_dir) / "test.parquet")
    test = test[test["domain"].isin(router.domains)]
    enc = tokenizer()(list(test["text"]), padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = pooled_after(passes["model"], enc["input_ids"], enc["attention_mask"], 1)
    chosen = router.choose(pooled, 0.0, None).domains
    right = pd.Series([c == d for c, d in zip(chosen, test["domain"], strict=True)])
    accuracy = right.groupby(test["domain"].to_numpy()).mean()
    assert len(accuracy) == 4 and (accuracy >= 0.9).all(), accuracy.to_dict()


# -- bad values -------------------------------------------------------------------------------


def test_bad_values_are_named(prepared: Params, tmp_path: Path) -> None:
    run = dict(out_dir=tmp_path / "m", log_mlflow=False, progress_bar=False,
               model=fresh(), tokenizer=tokenizer())  # fmt: skip
    data, tp = prepared.data, tp_for(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown modules \['coachella'\] in due"):
        train_modules(data, tp, mp_for(), due=["nfl", "coachella"], **run)
    with pytest.raises(ConfigError, match="at most once, and one or more"):
        train_modules(data, tp, mp_for(), due=[], **run)
    with pytest.raises(ConfigError, match=r"modules.router.layer must be in \[0, 2\].*got 3"):
        train_modules(data, tp, mp_for(layer=3), **run)
    adapted = fresh()
    mlra.add_adapter(adapted, "x", mlra.AdapterSpec(rank=2, targets=UPPER))
    with pytest.raises(ConfigError, match=r"needs a model without adapters \(it has \['x'\]\)"):
        train_modules(data, tp, mp_for(), **(run | {"model": adapted}))
    folder = tmp_path / "prepared"
    shutil.copytree(prepared.data.prepared_dir, folder)
    train = pd.read_parquet(folder / "train.parquet")
    train[train["domain"] != "apple"].to_parquet(folder / "train.parquet")
    with pytest.raises(DataError, match=r"modules \['apple'\] have no training rows"):
        train_modules(data, tp, mp_for(), due=["nfl"], prepared_dir=folder, **run)


def test_the_pass_is_an_mlflow_run_named_train_modules(
    prepared: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # the experiment's artifacts go to ./mlruns
    result = train_modules(prepared.data, tp_for(tmp_path, max_steps=2), mp_for(), due=["nfl"],
                           out_dir=tmp_path / "m", progress_bar=False, model=fresh(),
                           tokenizer=tokenizer())  # fmt: skip
    assert result.mlflow_run_id
    client = MlflowClient(uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.run_name == "train-modules" and run.data.tags["modules"] == "nfl"
    assert "train_loss" in run.data.metrics
    assert "modules.json" in {f.path for f in client.list_artifacts(result.mlflow_run_id)}
    assert result.modules["nfl"].metadata["mlflow_run_id"] == result.mlflow_run_id


@pytest.mark.integration
def test_the_pass_on_the_packaged_minilm(prepared: Params, tmp_path: Path) -> None:
    tp = tp_for(tmp_path, max_steps=2, batch_size=8, max_length=32, rows_per_domain=16,
                source_rows=40, targets=("layer.5.attention.self.query",))  # fmt: skip
    result = train_modules(prepared.data, tp, mp_for(layer=3), due=["apple"], out_dir=tmp_path,
                           log_mlflow=False, progress_bar=False)  # fmt: skip
    assert result.steps == 2 and list(result.modules) == ["apple"]
    assert result.kept == ["nfl", "claritin"]
    from mlra.base_model import load_base_model

    encoder, _ = load_base_model()
    probe = SentenceClassifier(encoder, 3)
    assert mlra.load_adapter(probe, result.modules["apple"].adapter_dir) == "apple"
    router, _ = Router.load(result.router_dir, result.router_sha256)
    assert router.layer == 3 and len(router.domains) == 4

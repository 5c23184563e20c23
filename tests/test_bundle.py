"""The bundle (base + module adapters + heads + router) and its evaluation, on a tiny BERT.

Invariants: a row naming its domain gets exactly its module's output (torch.equal with the module
loaded alone), a source-domain row exactly the base with the base head; a low-confidence row goes
to the fallback; replacing one module leaves every other row bit-identical; a changed file is
refused; a module is evaluated on its own slice; the bundle's router accuracy and source gate.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

import mlra
from mlra.bundle import Bundle
from mlra.candidate import ADAPTER_DIR
from mlra.classifier import SentenceClassifier, _in_input_order, _length_order, batches
from mlra.router import base_fingerprint, fit_router, router_features

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from test_training import LABELS, WORDS, tiny_tokenizer, tiny_train_params  # noqa: E402

from tests.conftest import make_tiny_bert  # noqa: E402

SOURCE, MODULES = "airline", ("apple", "nfl")
DOMAINS = (SOURCE, *MODULES)
CUE = {"airline": "flight", "apple": "phone", "nfl": "game"}  # what tells the domains apart
UPPER = r".*layer\.1\.attention\.self\.(query|value)"  # tiny BERT: layers 0 and 1
LENGTH = 24


def rows(n: int, seed: int) -> tuple[list[str], list[int], list[str]]:
    """Texts, labels and domains: each text carries its domain's cue word (three times) and, for
    non-neutral rows, sentiment words; domains cycle through :data:`DOMAINS`."""
    g = torch.Generator().manual_seed(seed)
    texts, labels, domains = [], [], []
    for i in range(n):
        domain, label = DOMAINS[i % 3], int(torch.randint(0, 3, (1,), generator=g))
        words = [CUE[domain]] * 3 + [WORDS["neutral"][int(torch.randint(0, 4, (1,), generator=g))]]
        if label != 1:
            words += [WORDS[LABELS[label]][int(torch.randint(0, 5, (1,), generator=g))]] * 2
        order = torch.randperm(len(words), generator=g).tolist()
        texts.append(" ".join(words[k] for k in order))
        labels.append(label)
        domains.append(domain)
    return texts, labels, domains


def base_head() -> nn.Linear:
    torch.manual_seed(7)
    return nn.Linear(32, 3)


def save_module(folder: Path, module: str, seed: int, rank: int = 4) -> Path:
    """A module candidate folder (mlra.candidate format) with a visibly non-zero adapter and its
    own head."""
    from mlra.candidate import save

    model = SentenceClassifier(make_tiny_bert(), 3)
    mlra.add_adapter(model, module, mlra.AdapterSpec(rank=rank, alpha=8.0, targets=UPPER))
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in mlra.adapter_parameters(model, module):
            p.normal_(0, 0.5)
        model.head.weight.normal_()
    meta = {"module": module, "domain": module, "params": {"train": {"max_length": LENGTH}}}
    save(model, module, LABELS, base_head(), folder, meta)
    return folder


def save_router(folder: Path, layer: int = 1, zero: bool = False) -> str:
    """A router fitted on cue-word rows of every domain (``zero``: all-zero weights, so every
    row's top probability is 1/3: the fallback's case)."""
    model = SentenceClassifier(make_tiny_bert(), 3)
    texts, _, domains = rows(90, 11)
    features, _ = router_features(model, tiny_tokenizer(), texts, layer, max_length=LENGTH)
    index = torch.tensor([DOMAINS.index(d) for d in domains])
    modules = {SOURCE: None} | {m: m for m in MODULES}
    router = fit_router(features, index, DOMAINS, modules, layer, LABELS)
    if zero:
        with torch.no_grad():
            router.linear.weight.zero_()
            router.linear.bias.zero_()
    return router.save(folder, base_head(), base_fingerprint=base_fingerprint(model), metadata={})


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("bundle")
    return {
        "apple": save_module(root / "apple", "apple", 1),
        "nfl": save_module(root / "nfl", "nfl", 2),
        "apple_v2": save_module(root / "apple_v2", "apple", 3, rank=8),
        "router": root / "router",
        "router_sha256": save_router(root / "router"),
        "root": root,
    }


def load(parts: dict[str, Any], modules: dict[str, Path] | None = None, **kw: Any) -> Bundle:
    modules = modules or {m: parts[m] for m in MODULES}
    return Bundle.load(modules, kw.pop("router", parts["router"]),
                       model=SentenceClassifier(make_tiny_bert(), 3), tokenizer=tiny_tokenizer(),
                       **kw)  # fmt: skip


def alone(folder: Path | None, texts: list[str], batch_size: int, tok: Any = None) -> torch.Tensor:
    """Probabilities of one model served alone, the plain way: a fresh base with only this
    module's adapter loaded and active and its head (None: no adapter, the base head), a whole
    forward per batch, batches as the bundle forms them."""
    model = SentenceClassifier(make_tiny_bert(), 3).eval()
    if folder is None:
        model.head = base_head()  # the one the router folder holds
    else:
        mlra.load_adapter(model, folder / ADAPTER_DIR)
    tok = tok or tiny_tokenizer()
    order = _length_order(tok, texts, LENGTH)
    with torch.no_grad():
        out = [torch.softmax(model(**b).float(), -1)
               for b in batches(tok, [texts[i] for i in order], batch_size, LENGTH)]  # fmt: skip
    return _in_input_order(torch.cat(out), order)


# -- serving --------------------------------------------------------------------------------------


def test_rows_naming_their_domain_get_exactly_their_module_or_the_base(parts: dict) -> None:
    texts, _, domains = rows(17, 3)
    bundle = load(parts)
    out = bundle.predict(texts, domains, batch_size=5)
    assert out.how == ["domain"] * 17
    assert out.modules == [None if d == SOURCE else d for d in domains]
    for name, folder in (("apple", parts["apple"]), ("nfl", parts["nfl"]), (SOURCE, None)):
        keep = torch.tensor([d == name for d in domains])
        expected = alone(folder, texts, batch_size=5)
        assert torch.equal(out.probabilities[keep], expected[keep]), name
    assert torch.equal(out.label, out.probabilities.argmax(-1))
    assert out.label_names()[0] in LABELS and out.rows()[0]["how"] == "domain"
    empty = bundle.predict([])
    assert empty.probabilities.shape == (0, 3) and empty.modules == []


@pytest.mark.parametrize("layer", [0, 1, 2])  # below, at, above the layers without adapters
def test_unnamed_rows_go_where_the_router_sends_them(parts: dict, layer: int) -> None:
    folder = parts["root"] / f"router_at_{layer}"
    save_router(folder, layer=layer)
    texts, _, domains = rows(30, 4)
    bundle = load(parts, router=folder, min_confidence=0.0)
    routed = bundle.predict(texts, [None] * 20 + ["cooking"] * 10, batch_size=8)
    assert routed.how == ["router"] * 30  # an unknown domain name is the router's to decide too
    assert sum(d == t for d, t in zip(routed.domains, domains, strict=True)) >= 27
    named = bundle.predict(texts, routed.domains, batch_size=8)  # same places, by name
    assert named.modules == routed.modules
    assert torch.equal(named.probabilities, routed.probabilities)
    assert bool((routed.confidence > 1 / 3).all())


def test_low_confidence_rows_go_to_the_fallback(parts: dict) -> None:
    zero = parts["root"] / "router_zero"
    save_router(zero, zero=True)  # every row's top probability: 1/3
    texts, _, domains = rows(12, 5)
    to_nfl = load(parts, router=zero, min_confidence=0.5, fallback="nfl")
    out = to_nfl.predict(texts, [None] * 6 + domains[6:], batch_size=4)
    assert out.how == ["fallback"] * 6 + ["domain"] * 6
    assert out.modules[:6] == ["nfl"] * 6
    assert torch.equal(out.probabilities[:6], alone(parts["nfl"], texts, 4)[:6])
    assert torch.allclose(out.confidence[:6], torch.full((6,), 1 / 3))
    to_base = load(parts, router=zero, min_confidence=0.5, fallback="base")
    out = to_base.predict(texts, batch_size=4)
    assert out.modules == [None] * 12 and out.how == ["fallback"] * 12
    assert torch.equal(out.probabilities, alone(None, texts, 4))


def test_a_module_the_bundle_lacks_falls_back(parts: dict) -> None:
    texts, _, _ = rows(12, 6)
    only_apple = load(parts, {"apple": parts["apple"]}, min_confidence=0.0)
    out = only_apple.predict(texts, batch_size=4)
    assert set(out.modules) <= {None, "apple"}
    assert [m for m, d in zip(out.modules, out.domains, strict=True) if d == "apple"] == [
        "apple" for d in out.domains if d == "apple"
    ]
    nfl_rows = [i for i, d in enumerate(out.domains) if d == "nfl"]
    assert nfl_rows and all(out.how[i] == "fallback" and out.modules[i] is None for i in nfl_rows)


def test_replacing_one_module_leaves_every_other_row_bit_identical(parts: dict) -> None:
    texts, _, domains = rows(24, 7)
    before = load(parts)
    after = load(parts, {"apple": parts["apple_v2"], "nfl": parts["nfl"]})  # apple: rank 4 -> 8
    assert after.adapter_sha256["nfl"] == before.adapter_sha256["nfl"]
    assert after.adapter_sha256["apple"] != before.adapter_sha256["apple"]
    for named in (domains, None):
        old = before.predict(texts, named, batch_size=6)
        new = after.predict(texts, named, batch_size=6)
        assert old.modules == new.modules
        other = torch.tensor([m != "apple" for m in old.modules])
        assert bool(other.any()) and not bool(other.all())
        assert torch.equal(old.probabilities[other], new.probabilities[other])
        assert not torch.equal(old.probabilities[~other], new.probabilities[~other])


def test_changed_or_foreign_files_are_refused(parts: dict, tmp_path: Path) -> None:
    import shutil

    from mlra.errors import BaseModelMismatchError, ConfigError, IntegrityError

    nfl = shutil.copytree(parts["nfl"], tmp_path / "nfl")
    weights = nfl / ADAPTER_DIR / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    with pytest.raises(IntegrityError, match=r"adapter_model\.safetensors"):
        load(parts, {"apple": parts["apple"], "nfl": nfl})
    router = shutil.copytree(parts["router"], tmp_path / "router")
    with pytest.raises(IntegrityError, match="expected"):
        load(parts, router=router, router_sha256="0" * 64)
    assert (
        load(parts, router=router, router_sha256=parts["router_sha256"]).router_sha256
        == (parts["router_sha256"])
    )
    linear = router / "router.safetensors"
    linear.write_bytes(linear.read_bytes()[:-1] + b"\x01")
    with pytest.raises(IntegrityError, match=r"router\.safetensors"):
        load(parts, router=router)
    with pytest.raises(ConfigError, match="holds module 'nfl'"):
        load(parts, {"apple": parts["nfl"]})
    with pytest.raises(BaseModelMismatchError):
        Bundle.load({}, parts["router"], model=SentenceClassifier(make_tiny_bert(seed=1), 3),
                    tokenizer=tiny_tokenizer())  # fmt: skip
    with pytest.raises(ConfigError, match="fallback 'claritin'"):
        load(parts, fallback="claritin")


# -- evaluation -----------------------------------------------------------------------------------


def _data(prepared: Path) -> Any:
    from mlra.config import DataParams, SplitShares

    return DataParams(
        prepared_dir=str(prepared), feedback_dir="unused", inbox_dir="unused", seed=0,
        source_domain=SOURCE, target_domains=MODULES, feedback_pool=0.0,
        splits=SplitShares(train=0.7, val=0.1, test=0.1, golden=0.1),
        text_min_chars=1, text_max_chars=1000,
    )  # fmt: skip


def _eval() -> Any:
    from mlra.config import EvaluateParams

    return EvaluateParams(
        metrics_file="m.json", report_file="m.md", plots_dir="plots", champion_dir="",
        max_rows_per_slice=0, batch_size=8, noisy_class_rows=2,
    )  # fmt: skip


def _modules(**router: Any) -> Any:
    from mlra.config import ModulesParams, RouterParams

    regression = router.pop("max_source_regression", 0.005)
    return ModulesParams(mode="modular", max_source_regression=regression,
                         router=RouterParams(layer=1, **router))  # fmt: skip


def _golden(folder: Path, n: int = 60, labels_from: Bundle | None = None) -> Path:
    """A golden split of cue-word rows; ``labels_from``: label each row as that bundle's base
    predicts it (so the base scores 1.0 on every slice)."""
    texts, labels, domains = rows(n, 9)
    if labels_from is not None:
        labels = labels_from.predict(texts, [SOURCE] * n).label.tolist()
    frame = pd.DataFrame({"id": [f"{i:03d}" for i in range(n)], "text": texts,
                          "label": [LABELS[k] for k in labels], "domain": domains,
                          "origin": "corpus"})  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / "golden.parquet")
    return folder


def test_a_module_is_evaluated_on_its_own_slice(parts: dict, tmp_path: Path) -> None:
    from mlra.errors import ConfigError
    from mlra.evaluation import evaluate

    prepared = _golden(tmp_path)
    result = evaluate(
        _data(prepared), _eval(), parts["apple_v2"], champion_dir=parts["apple"],
        model=SentenceClassifier(make_tiny_bert(), 3), tokenizer=tiny_tokenizer(),
        domains=["apple"], overall="apple",
    )  # fmt: skip
    assert result.overall == "apple" and list(result.slices) == ["apple"]  # the rest repeat it
    assert result.slices["apple"].scores["candidate"].support == 20  # the apple rows only
    data = result.to_dict()
    assert data["overall"] == data["slices"]["apple"] and data["info"]["domains"] == ["apple"]
    assert result.models == ("base", "candidate", "champion")

    def kw() -> dict[str, Any]:
        return {"model": SentenceClassifier(make_tiny_bert(), 3), "tokenizer": tiny_tokenizer()}

    whole = evaluate(_data(prepared), _eval(), parts["apple"], **kw())
    assert whole.overall == "targets" and "domains" not in whole.info
    assert whole.slices["apple"].scores["candidate"] == result.slices["apple"].scores["champion"]
    with pytest.raises(ConfigError, match="'cooking'"):
        evaluate(_data(prepared), _eval(), parts["apple"], domains=["cooking"], **kw())


def test_bundle_evaluation_router_accuracy_and_gates(
    parts: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib
    import json
    from collections.abc import Iterator

    import mlra.bundle_eval
    from mlra.bundle_eval import BundleSource, bundle_gates, evaluate_bundle, write_bundle_outputs
    from mlra.metrics import EvaluationMetrics

    progress: list[Any] = []

    @contextlib.contextmanager
    def recorded(total: int, what: str) -> Iterator[Any]:
        progress.append((total, what))
        yield progress.append

    monkeypatch.setattr(mlra.bundle_eval, "_progress", recorded)

    prepared = _golden(tmp_path / "prepared", labels_from=load(parts))
    good = BundleSource({m: parts[m] for m in MODULES}, parts["router"], parts["router_sha256"],
                        ref={"bundle": 1})  # fmt: skip
    zero = tmp_path / "router_zero"
    save_router(zero, zero=True)
    to_apple = BundleSource({m: parts[m] for m in MODULES}, zero)  # every row falls to apple
    mp = _modules(min_confidence=0.5, fallback="apple")
    kw: dict[str, Any] = {"model": SentenceClassifier(make_tiny_bert(), 3),
                          "tokenizer": tiny_tokenizer()}  # fmt: skip

    result = evaluate_bundle(_data(prepared), _eval(), mp, to_apple, good, **kw)
    assert result.models == ("base", "candidate", "champion")
    assert progress[0] == (60, "evaluating 3 models on the golden sets")  # golden rows, one pass
    assert sum(progress[1:]) == 60
    info = result.info
    assert info["champion_ref"] == {"bundle": 1}
    assert info["router_accuracy"] == {"airline": 0.0, "apple": 1.0, "nfl": 0.0}
    assert info["routed_to"] == {d: {"apple": 20} for d in DOMAINS}
    assert info["fell_back"] == dict.fromkeys(DOMAINS, 20)
    # the serving bundle's router, checked against its own predictions
    texts, truth = _golden_texts(prepared)
    served = load(parts, min_confidence=0.5, fallback="apple").predict(texts)
    for d in DOMAINS:
        own = None if d == SOURCE else d
        mine = [m == own for m, t in zip(served.modules, truth, strict=True) if t == d]
        assert info["champion_router_accuracy"][d] == pytest.approx(sum(mine) / len(mine))
    source = result.slices[SOURCE].scores
    assert source["base"].macro_f1 == 1.0  # golden labels are the base's own predictions
    drop = source["base"].macro_f1 - source["candidate"].macro_f1
    assert drop > 0.02  # the apple module does not predict what the base does on airline rows

    def gates(**params: Any) -> dict[str, bool]:
        return {g.name: g.passed for g in bundle_gates(result, _modules(**params), 0)}

    assert gates(max_source_regression=drop + 0.01, min_accuracy=0.0)["source_forgetting"]
    assert not gates(max_source_regression=drop - 0.01, min_accuracy=0.0)["source_forgetting"]
    assert gates(min_accuracy=0.0)["router_accuracy"]
    assert not gates(min_accuracy=0.8)["router_accuracy"]
    # below min_slice_support: reported, not gated
    lenient = {g.name: g for g in bundle_gates(result, _modules(min_accuracy=0.8), 1000)}
    assert (
        lenient["source_forgetting"].passed and "not gated" in lenient["source_forgetting"].detail
    )
    assert lenient["router_accuracy"].passed  # like every slice gate: too few rows to judge
    assert "not gated (support < 1000)" in lenient["router_accuracy"].detail

    out = tmp_path / "out"
    plots = write_bundle_outputs(result, out / "eval.json", out / "eval.md", tmp_path / "plots")
    data = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert EvaluationMetrics.from_dict(data).overall.champion is not None
    assert {g.name: g.passed for g in bundle_gates(data, mp, 0)} == gates(
        min_confidence=0.5, fallback="apple"
    )
    assert (tmp_path / "plots" / "router_confusion.png") in plots
    assert all(p.stat().st_size > 5000 for p in plots)
    assert "router accuracy" in (tmp_path / "out" / "eval.md").read_text()


def _golden_texts(prepared: Path) -> tuple[list[str], list[str]]:
    frame = pd.read_parquet(prepared / "golden.parquet")
    return list(frame["text"]), list(frame["domain"])


def test_a_bundle_without_modules_is_the_base(parts: dict) -> None:
    texts, _, _ = rows(9, 8)
    out = Bundle.load({}, parts["router"], model=SentenceClassifier(make_tiny_bert(), 3),
                      tokenizer=tiny_tokenizer()).predict(texts, batch_size=4)  # fmt: skip
    assert out.modules == [None] * 9
    assert torch.equal(out.probabilities, alone(None, texts, 4))
    assert set(out.how) <= {"router", "fallback"} and "fallback" in out.how  # no module to serve


# -- end to end: a modular training pass, served and evaluated as a bundle -----------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One modular pass (mlra.training.train_modules) on prepared synthetic splits."""
    from transformers import BertTokenizerFast

    from mlra.config import ModulesParams, RouterParams
    from mlra.data.feedback import simulate
    from mlra.data.ingest import ingest
    from mlra.data.splits import prepare
    from mlra.training import train_modules
    from tests.data.synthetic import MOODS, TEMPLATES, small_params, synthetic_corpus

    tmp = tmp_path_factory.mktemp("trained")
    params = small_params(tmp)
    corpus = synthetic_corpus(60)
    ingest(simulate(params, corpus=corpus, batches=1), params.data.feedback_dir, params)
    prepare(params, corpus=corpus)
    words = " ".join([*TEMPLATES.values(), *MOODS.values()]).format(i="", mood="").lower()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + sorted(set(re.findall(r"[a-z]+|[@#:]", words)))  # the corpus's words
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    upper = ("layer.1.attention.self.query", "layer.1.attention.self.value")
    tp = tiny_train_params(targets=upper, max_epochs=2, max_steps=4, val_every_steps=2,
                           checkpoint_dir=str(tmp / "ckpt"))  # fmt: skip
    mp = ModulesParams(mode="modular", domains=("nfl", "apple"), router=RouterParams(layer=1))
    result = train_modules(params.data, tp, mp, out_dir=tmp / "modules", log_mlflow=False,
                           progress_bar=False, model=SentenceClassifier(make_tiny_bert(), 3),
                           tokenizer=tok)  # fmt: skip
    return {"params": params, "mp": mp, "result": result, "tok": tok}


def test_a_trained_pass_serves_and_evaluates_as_a_bundle(trained: dict[str, Any]) -> None:
    from mlra.bundle_eval import BundleSource, bundle_gates, evaluate_bundle
    from mlra.data.splits import load_split
    from mlra.evaluation import evaluate

    params, mp, result, tok = trained["params"], trained["mp"], trained["result"], trained["tok"]
    folders = {m: r.out_dir for m, r in result.modules.items()}
    assert set(folders) == {"nfl", "apple"}
    bundle = Bundle.load(folders, result.router_dir, router_sha256=result.router_sha256,
                         model=SentenceClassifier(make_tiny_bert(), 3), tokenizer=tok)  # fmt: skip
    golden = load_split(params.data.prepared_dir, "golden")
    golden = golden[golden["domain"].isin([SOURCE, "nfl", "apple"])]
    texts, domains = list(golden["text"]), list(golden["domain"])
    out = bundle.predict(texts, domains, batch_size=16)
    assert out.modules == [None if d == SOURCE else d for d in domains]
    for name, folder in (("nfl", folders["nfl"]), ("apple", folders["apple"])):
        keep = torch.tensor([d == name for d in domains])
        assert torch.equal(out.probabilities[keep], alone(folder, texts, 16, tok)[keep]), name

    source = BundleSource(folders, result.router_dir, result.router_sha256)
    kw: dict[str, Any] = {"model": SentenceClassifier(make_tiny_bert(), 3), "tokenizer": tok}
    ev = evaluate_bundle(params.data, params.evaluate, mp, source, **kw)
    assert ev.models == ("base", "candidate") and ev.overall == "targets"
    assert set(ev.info["router_accuracy"]) == {SOURCE, "nfl", "apple"}  # the router's domains
    golden_domains = set(load_split(params.data.prepared_dir, "golden")["domain"])
    assert set(ev.info["routed_to"]) == golden_domains  # moduleless domains: reported, routed
    assert [g.name for g in bundle_gates(ev, mp, 0)] == ["source_forgetting", "router_accuracy"]
    kw["model"] = SentenceClassifier(make_tiny_bert(), 3)
    alone_nfl = evaluate(params.data, params.evaluate, folders["nfl"], domains=["nfl"],
                         overall="nfl", **kw)  # fmt: skip
    assert list(alone_nfl.slices) == ["nfl"]
    # the bundle serves nfl's named rows as the module evaluated alone does
    assert alone_nfl.slices["nfl"].scores["candidate"].support == len(
        golden[golden["domain"] == "nfl"]
    )


# -- several bundles in one pass (what the bundle evaluation runs) -------------------------------


def _permuted_tokenizer() -> Any:
    """The tiny tokenizer's words under other ids: other tokens for the same texts."""
    from transformers import BertTokenizerFast

    vocab = list(tiny_tokenizer().get_vocab())
    specials, words = vocab[:5], vocab[5:]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(specials + words[::-1])})


def _same(a: Any, b: Any) -> bool:
    return (
        torch.equal(a.probabilities, b.probabilities) and torch.equal(a.label, b.label)
        and torch.equal(a.confidence, b.confidence)
        and (a.modules, a.domains, a.how) == (b.modules, b.domains, b.how)
    )  # fmt: skip


def test_bundles_predicted_together_get_exactly_their_own_predictions(
    parts: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlra.bundle_pass import _sharing_groups, predict_together

    texts, _, domains = rows(29, 12)
    new = load(parts, min_confidence=0.0)
    old = load(parts, {"apple": parts["apple_v2"], "nfl": parts["nfl"]}, min_confidence=0.6,
               fallback="nfl")  # another model object, another tokenizer object  # fmt: skip
    empty = load(parts, {})  # no adapter: all its layers are shared, the others' fewer
    jobs = [(new, [SOURCE] * 29), (new, None), (old, None), (new, domains), (empty, None)]
    assert _sharing_groups([b for b, _ in jobs], texts) == [[0, 1, 2, 3, 4]]
    calls: list[int] = []
    hidden_after = SentenceClassifier.hidden_after

    def counted(self: SentenceClassifier, *args: Any, **kw: Any) -> torch.Tensor:
        calls.append(id(self))
        return hidden_after(self, *args, **kw)

    monkeypatch.setattr(SentenceClassifier, "hidden_after", counted)
    done: list[int] = []
    together = predict_together(jobs, texts, batch_size=8, progress=done.append)
    assert done == [8, 8, 8, 5]  # rows done by every job, not rows x jobs
    assert calls == [id(new.model)] * 4  # the layers below the adapters: once per batch
    for (bundle, named), got in zip(jobs, together, strict=True):
        assert _same(got, bundle.predict(texts, named, batch_size=8))
    assert together[0].modules == [None] * 29 and together[3].how == ["domain"] * 29
    assert not torch.equal(together[1].probabilities, together[2].probabilities)
    nothing = predict_together([(new, []), (old, None)], [])
    assert [p.probabilities.shape for p in nothing] == [(0, 3)] * 2


def test_bundles_on_other_batches_get_a_pass_of_their_own(parts: dict) -> None:
    from mlra.bundle_pass import _sharing_groups, predict_together

    texts, _, _ = rows(21, 13)
    new = load(parts, min_confidence=0.0)
    shorter = load(parts, min_confidence=0.0, max_length=6)  # other (cut) tokens
    other_ids = Bundle.load({m: parts[m] for m in MODULES}, parts["router"], min_confidence=0.0,
                            model=SentenceClassifier(make_tiny_bert(), 3),
                            tokenizer=_permuted_tokenizer())  # fmt: skip
    jobs = [(new, None), (shorter, None), (other_ids, None)]
    assert _sharing_groups([b for b, _ in jobs], texts) == [[0], [1], [2]]
    together = predict_together(jobs, texts, batch_size=4)
    for (bundle, named), got in zip(jobs, together, strict=True):
        assert _same(got, bundle.predict(texts, named, batch_size=4))
    assert not torch.equal(together[0].probabilities, together[2].probabilities)

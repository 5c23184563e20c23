"""The modular training pass: every due module (an adapter and a head per target domain) trained
together in one routed Lightning fit, plus the router, saved under ``modules.out_dir``::

    <module>/      a candidate folder (mlra.candidate) per module trained in this pass
    router/        the router (mlra.router) and the base head
    modules.json   what this pass trained and kept, its steps, seconds and rows

First one pass of the frozen base over the source rows gives the base head's features and the
router's (read from the feature cache, :mod:`mlra.training.features`, when an earlier pass
computed them from the same base and tokens). Then one fit trains all due modules: each row
through its own module (:class:`ModularClassifier`), the frozen-prefix cache shared, checkpoints
and resume as in :func:`mlra.training.train`. Source rows are not replayed: the source domain is
served by the base. Last the router is fitted on the source rows and every module's domain rows,
due or not (the due modules' features come from the training cache when it ends at the router's
layer; the others' from the feature cache). Folders of modules not trained in this pass are
removed, so a stale folder is never taken for a fresh candidate; the feature cache
(``.cache/``) stays.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import lightning as L
import torch
from torch import nn

import mlra
from mlra._hashing import canonical_json, sha256_hex
from mlra.candidate import ADAPTER_DIR, BASE_HEAD_FILE
from mlra.classifier import SentenceClassifier, fit_head
from mlra.config import DataParams, ModulesParams, TrainParams
from mlra.errors import ConfigError, DataError
from mlra.lineage import params_hash, plain
from mlra.router import Router, base_fingerprint, check_layer, fit_router
from mlra.training.data import DomainRows, load_domain_rows
from mlra.training.features import CACHE_DIR, FeatureCache
from mlra.training.job import _mlflow_logger, _remove_checkpoints, lineage_metadata
from mlra.training.routed import ModularClassifier, ModularDataModule
from mlra.training.trainer import check_precision, fit, resumable_checkpoint

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

__all__ = ["MODULES_JSON", "ROUTER_DIR", "ModularTrainResult", "ModuleResult", "train_modules"]

ROUTER_DIR: Final = "router"
MODULES_JSON: Final = "modules.json"


@dataclasses.dataclass
class ModuleResult:
    """One module trained by :func:`train_modules`: its candidate folder and lineage."""

    module: str
    out_dir: Path
    adapter_dir: Path
    adapter_sha256: str
    metadata: dict[str, Any]


@dataclasses.dataclass
class ModularTrainResult:
    """What :func:`train_modules` produced (on a DDP rank other than 0: no modules, no router)."""

    out_dir: Path
    modules: dict[str, ModuleResult]
    router_dir: Path
    router_sha256: str
    kept: list[str]
    seconds: dict[str, float]
    steps: int
    feedback_rows_by_domain: dict[str, int]
    mlflow_run_id: str | None


def due_modules(names: Sequence[str], due: Sequence[str] | None) -> list[str]:
    """``due`` in the order of ``names`` (None: every module); an unknown or repeated name is a
    :class:`ConfigError` naming it."""
    if due is None:
        return list(names)
    unknown = [d for d in due if d not in names]
    if unknown:
        raise ConfigError(f"unknown modules {unknown} in due: the modules are {list(names)}")
    if len(set(due)) != len(due) or not due:
        raise ConfigError(f"due must name each module at most once, and one or more: got {due}")
    return [n for n in names if n in due]


def train_modules(
    data: DataParams,
    tp: TrainParams,
    mp: ModulesParams,
    *,
    due: Sequence[str] | None = None,
    prepared_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    log_mlflow: bool = True,
    progress_bar: bool = True,
    model: SentenceClassifier | None = None,
    tokenizer: Any = None,
    feature_cache: bool = True,
) -> ModularTrainResult:
    """Train the modules in ``due`` (None: all of ``mp.names(data)``) in one routed pass, fit the
    router, and write ``out_dir`` (default ``modules.out_dir``; see the module docstring).

    ``model``/``tokenizer``: a fresh :class:`SentenceClassifier` (no adapters; its head is refit
    on source rows) and its tokenizer, instead of the packaged MiniLM (tests pass a tiny one).
    ``resume``: continue from ``<train.checkpoint_dir>/modules/last.ckpt`` when it was written by
    a run with the same parameters, data and due modules. ``feature_cache``: keep the frozen
    base's source-row and router features in ``<out_dir>/.cache`` and reuse them when they verify
    (:mod:`mlra.training.features`: the pass is bit for bit the same either way).
    """
    from mlra.data import LABELS

    check_precision(tp.precision, tp.accelerator)
    names = mp.names(data)
    trained = due_modules(names, due)
    folder = Path(prepared_dir or data.prepared_dir)
    rows = load_domain_rows(data, tp, names, folder, LABELS)
    _check_rows(rows, trained, folder)
    lineage = lineage_metadata(data, tp, folder)
    run_params = params_hash({"data": data, "train": tp, "modules": mp})
    run_key = sha256_hex(canonical_json([run_params, lineage["data_hash"], trained]))
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    L.seed_everything(tp.seed, workers=True, verbose=False)
    if model is None:
        from mlra.base_model import load_base_model

        encoder, tokenizer = load_base_model()
        model = SentenceClassifier(encoder, len(LABELS), pooling=tp.pooling)
    elif tokenizer is None or mlra.adapter_names(model):
        raise ConfigError(
            "train_modules(model=...) needs a model without adapters "
            f"(it has {mlra.adapter_names(model)}) and its tokenizer= "
            f"({'given' if tokenizer is not None else 'missing'})"
        )
    check_layer(model, mp.router.layer)
    out = Path(out_dir or mp.out_dir)
    fingerprint = base_fingerprint(model)
    cache = FeatureCache(out / CACHE_DIR if feature_cache else None, model, tokenizer,
                         fingerprint=fingerprint, layer=mp.router.layer,
                         max_length=tp.max_length)  # fmt: skip
    base_head, source = _fit_base_head(model, rows, tp, cache)
    seconds["base_head"] = time.perf_counter() - clock

    clock = time.perf_counter()
    L.seed_everything(tp.seed, workers=True, verbose=False)
    specs = {n: mp.spec(n, tp.adapter) for n in trained}
    module = ModularClassifier(model, tp, specs, LABELS, run_key, pool_layer=mp.router.layer)
    datamodule = _datamodule(tokenizer, rows, trained, tp)
    checkpoint_dir = Path(tp.checkpoint_dir) / "modules"  # apart from the shared adapter's
    ckpt = resumable_checkpoint(checkpoint_dir, run_key) if resume else None
    tags = {k: v for k, v in lineage.items() if k != "versions"}
    tags |= {"stage": "train-modules", "modules": ",".join(trained)}
    # the shared job's logger, named train-<adapter_name>: this run is "train-modules"
    logger: Logger | bool = (
        _mlflow_logger(dataclasses.replace(tp, adapter_name="modules"), tags)
        if log_mlflow
        else False
    )
    trainer = fit(module, datamodule, tp, checkpoint_dir=checkpoint_dir, resume=ckpt,
                  logger=logger, progress_bar=progress_bar)  # fmt: skip
    seconds["train"] = time.perf_counter() - clock

    run_id = getattr(logger, "run_id", None) if logger else None
    kept = [n for n in names if n not in trained]
    result = ModularTrainResult(out, {}, out / ROUTER_DIR, "", kept, seconds, trainer.global_step,
                                rows.feedback_rows, run_id)  # fmt: skip
    if not trainer.is_global_zero:  # DDP: rank 0 fits the router and writes
        return result
    clock = time.perf_counter()
    router = _fit_router(module, rows, source, data, mp, cache)
    seconds["router"] = time.perf_counter() - clock
    clock = time.perf_counter()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    common = {
        **lineage,
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "resumed_from": str(ckpt) if ckpt else None,
        "source_domain": data.source_domain,
        "target_domains": list(data.target_domains),
        "trained_with": trained,
        "pass_val_metrics": metrics,
    } | ({"mlflow_run_id": run_id} if run_id else {})
    _clear(out, names)
    router_meta = common | {
        "params_hash": run_params,
        "rows_by_domain": _router_rows(rows, data, names),
    }
    result.router_sha256 = router.save(out / ROUTER_DIR, base_head, base_fingerprint=fingerprint,
                                       metadata=router_meta)  # fmt: skip
    for name in trained:
        tp_m = dataclasses.replace(tp, adapter=specs[name])
        meta = common | _module_metadata(name, rows, data, tp_m, mp, metrics)
        meta["router_sha256"] = result.router_sha256
        result.modules[name] = _save_module(module, name, base_head, out / name, meta)
    seconds["save"] = time.perf_counter() - clock
    summary = _write_summary(out, result, rows, names)
    if isinstance(logger, L.pytorch.loggers.MLFlowLogger):
        logger.experiment.log_dict(run_id, summary, MODULES_JSON)
    _remove_checkpoints(checkpoint_dir)
    return result


def _check_rows(rows: DomainRows, trained: Sequence[str], folder: Path) -> None:
    """Every module has training rows (the router learns every module's domain, due or not),
    and some module to train has validation rows."""
    empty = [n for n in rows.train if not rows.train[n][0]]
    if empty:
        raise DataError(
            f"modules {empty} have no training rows in {folder}/train.parquet (rows of their "
            "domain), which their training and the router need: add rows of that domain, or "
            "leave it out of modules.domains"
        )
    if not any(rows.val[n][0] for n in trained):
        raise DataError(f"no validation rows of the domains {list(trained)} in {folder}")


def _fit_base_head(
    model: SentenceClassifier, rows: DomainRows, tp: TrainParams, cache: FeatureCache
) -> tuple[nn.Linear, torch.Tensor]:
    """The base head, fitted on the source rows (and set as ``model.head``), and the router's
    features of those rows, both from one pass of the frozen base (or the feature cache)."""
    source, embedded = cache.features(rows.source_texts, embed=True)
    assert embedded is not None
    torch.manual_seed(tp.seed)
    fit_head(model.head, embedded, torch.tensor(rows.source_labels))
    return copy.deepcopy(model.head).requires_grad_(False), source


def _fit_router(
    module: ModularClassifier,
    rows: DomainRows,
    source: torch.Tensor,
    data: DataParams,
    mp: ModulesParams,
    cache: FeatureCache,
) -> Router:
    """The router, on the source rows' features and every module's domain rows'. The trained
    modules' rows come from the training run's frozen-prefix cache when it ends at the router's
    layer (:attr:`ModularClassifier.prefix_pooled`: no second pass); the others' from ``cache``
    (computed, or read from disk)."""
    names = list(rows.train)
    cached = module.prefix_pooled
    parts = [source]
    for name in names:
        texts = rows.train[name][0]
        if cached is not None and name in module.names:
            k = module.names.index(name)
            start = sum(len(rows.train[n][0]) for n in module.names[:k])
            parts.append(cached[start : start + len(texts)])
        else:
            parts.append(cache.features(texts)[0])
    domain = [0] * len(source) + [k + 1 for k, n in enumerate(names) for _ in rows.train[n][0]]
    return fit_router(
        torch.cat(parts), torch.tensor(domain), [data.source_domain, *names],
        {data.source_domain: None, **{n: n for n in names}}, mp.router.layer, module.labels,
    )  # fmt: skip


def _module_metadata(
    name: str,
    rows: DomainRows,
    data: DataParams,
    tp_m: TrainParams,
    mp: ModulesParams,
    metrics: Mapping[str, float],
) -> dict[str, Any]:
    """What module ``name``'s candidate records besides the pass's lineage: its own params hash
    (the train section with its adapter spec), domain, feedback rows, rows and val metrics."""
    n_train = len(rows.train[name][0])
    return {
        "params_hash": params_hash({"data": data, "train": tp_m}),
        "params": {"data": plain(data), "train": plain(tp_m), "modules": plain(mp)},
        "module": name,
        "domain": name,
        "feedback_rows": rows.feedback_rows[name],
        "rows": {"train": n_train, "val": len(rows.val[name][0]),
                 "source": len(rows.source_texts), "train_by_domain": {name: n_train}},
        "val_metrics": {key: metrics[f"{key}_{name}"] for key in ("val_macro_f1", "val_accuracy")
                        if f"{key}_{name}" in metrics},
    }  # fmt: skip


def _datamodule(
    tokenizer: Any, rows: DomainRows, trained: Sequence[str], tp: TrainParams
) -> ModularDataModule:
    """Training and validation rows of the due modules, each with its module's index."""

    def split(
        part: Mapping[str, tuple[list[str], list[int]]],
    ) -> tuple[list[str], list[int], list[int]]:
        texts = [t for n in trained for t in part[n][0]]
        labels = [y for n in trained for y in part[n][1]]
        modules = [k for k, n in enumerate(trained) for _ in part[n][0]]
        return texts, labels, modules

    return ModularDataModule(
        tokenizer, split(rows.train), split(rows.val),
        batch_size=tp.batch_size, max_length=tp.max_length, seed=tp.seed,
    )  # fmt: skip


def _router_rows(rows: DomainRows, data: DataParams, names: Sequence[str]) -> dict[str, int]:
    return {data.source_domain: len(rows.source_texts)} | {n: len(rows.train[n][0]) for n in names}


def _clear(out: Path, names: Sequence[str]) -> None:
    """Before writing: drop ``modules.json`` and every candidate folder in ``out`` (modules not
    trained now must not look fresh; trained ones are rewritten whole)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / MODULES_JSON).unlink(missing_ok=True)
    for child in out.iterdir():
        looks = (child / ADAPTER_DIR).is_dir() or (child / BASE_HEAD_FILE).is_file()
        if child.is_dir() and child.name != ROUTER_DIR and (looks or child.name in names):
            shutil.rmtree(child)


def _save_module(
    module: ModularClassifier, name: str, base_head: nn.Linear, out: Path, meta: dict[str, Any]
) -> ModuleResult:
    """Module ``name`` as a candidate folder: its adapter, with its head as the model's head."""
    from mlra import candidate

    model = module.model
    saved = copy.deepcopy(model.head.state_dict())
    try:
        model.head.load_state_dict(module.module_head(name).state_dict())
        manifest = candidate.save(model, name, module.labels, base_head, out, meta)
    finally:
        model.head.load_state_dict(saved)
    return ModuleResult(name, out, out / ADAPTER_DIR, manifest.sha256, meta)


def _write_summary(
    out: Path, result: ModularTrainResult, rows: DomainRows, names: Sequence[str]
) -> dict[str, Any]:
    """``modules.json``, written last (atomically): what this pass trained and kept."""
    summary = {
        "trained": list(result.modules),
        "kept": result.kept,
        "router": ROUTER_DIR,
        "router_sha256": result.router_sha256,
        "adapter_sha256": {n: m.adapter_sha256 for n, m in result.modules.items()},
        "steps": result.steps,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "feedback_rows_by_domain": rows.feedback_rows,
        "rows_by_module": {n: len(rows.train[n][0]) for n in names},
    }
    tmp = out / (MODULES_JSON + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out / MODULES_JSON)
    return summary

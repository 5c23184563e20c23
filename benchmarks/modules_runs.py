"""The runs of the modules section (benchmarks/modules.py): a temporary project on the packaged
data, and one seed's accuracy of the bundle, the shared adapter, full fine-tuning and the
source-only model, each trained and scored by the library functions a user calls."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from benchmarks.harness import CPU, Settings
from benchmarks.workloads import optimiser_for, peft_epoch, trainable

if TYPE_CHECKING:
    from mlra.config import Params
    from mlra.evaluation import EvaluationResult
    from mlra.training import ModularTrainResult, TrainResult


@dataclasses.dataclass
class Project:
    """A project in ``tmp``: params.yaml with the section's budget, data prepared there."""

    tmp: Path
    params: Params
    settings: Settings
    rows: dict[str, int]
    module_names: tuple[str, ...]

    @classmethod
    def create(cls, tmp: Path, params_file: Path, sizes: Any, settings: Settings) -> Project:
        """``params_file`` with the budget of ``sizes``, its data prepared into ``tmp/prepared``
        by ``mlra.data.splits.prepare`` (no feedback: ``tmp/feedback`` is empty)."""
        from mlra.config import load_params
        from mlra.data.splits import prepare
        from mlra.evaluation import golden_rows
        from mlra.training import load_domain_rows, load_training_data

        p = load_params(params_file)
        data = dataclasses.replace(p.data, prepared_dir=str(tmp / "prepared"),
                                   feedback_dir=str(tmp / "feedback"),
                                   inbox_dir=str(tmp / "inbox"))  # fmt: skip
        train = dataclasses.replace(
            p.train, rows_per_domain=sizes.rows_per_domain, source_rows=sizes.source_rows,
            val_rows_per_domain=sizes.val_rows_per_domain, max_epochs=sizes.epochs, max_steps=-1,
            batch_size=sizes.batch_size or p.train.batch_size,
            replay_rows=p.train.replay_rows if sizes.replay_rows < 0 else sizes.replay_rows,
        )  # fmt: skip
        ev = dataclasses.replace(p.evaluate, max_rows_per_slice=sizes.golden_per_slice)
        modules = dataclasses.replace(p.modules, mode="modular")
        p = dataclasses.replace(p, data=data, train=train, evaluate=ev, modules=modules)
        prepare(p)
        names = p.modules.names(p.data)
        found = load_domain_rows(p.data, p.train, names, p.data.prepared_dir)
        rows = {
            "source": len(found.source_texts),
            "targets": sum(len(found.train[n][0]) for n in names),
            "replay": load_training_data(p.data, p.train, p.data.prepared_dir).rows_by_domain.get(
                p.data.source_domain, 0
            ),
            "golden": len(golden_rows(p.data, p.evaluate, p.data.prepared_dir)),
        }
        return cls(tmp, p, settings, rows, names)

    def tp(self, seed: int, folder: Path, **changes: Any) -> Any:
        """The train section for one seed, writing under ``folder``."""
        return dataclasses.replace(
            self.params.train, seed=seed, out_dir=str(folder / "candidate"),
            checkpoint_dir=str(folder / "checkpoints"), **changes,
        )  # fmt: skip

    def train_modules(
        self,
        seed: int,
        folder: Path,
        *,
        due: Sequence[str] | None = None,
        feature_cache: bool = True,
    ) -> ModularTrainResult:
        from mlra.training import train_modules

        mp = dataclasses.replace(self.params.modules, out_dir=str(folder / "modules"))
        return train_modules(self.params.data, self.tp(seed, folder), mp, due=due, resume=False,
                             log_mlflow=False, progress_bar=False,
                             feature_cache=feature_cache)  # fmt: skip

    def train_shared(self, seed: int, folder: Path, **changes: Any) -> TrainResult:
        from mlra.training import train

        return train(self.params.data, self.tp(seed, folder, **changes), resume=False,
                     log_mlflow=False, progress_bar=False)  # fmt: skip


def base_params() -> int:
    """Parameters of the packaged MiniLM encoder (the base the shares are of)."""
    from mlra.base_model import load_base_model

    encoder, _ = load_base_model()
    return sum(p.numel() for p in encoder.parameters())


def adapter_params(adapter_dir: Path) -> int:
    """Tensors in an adapter artifact: the adapter and its head (what the module trains)."""
    return _tensor_params(adapter_dir / "adapter_model.safetensors")


def _tensor_params(path: Path) -> int:
    import safetensors.torch

    return sum(t.numel() for t in safetensors.torch.load_file(str(path)).values())


def accuracy_seed(project: Project, seed: int) -> dict[str, Any]:
    """One seed: train the modules, the shared adapter and full fine-tuning; score all four."""
    from mlra.bundle_eval import BundleSource, evaluate_bundle
    from mlra.candidate import BASE_HEAD_FILE
    from mlra.evaluation import evaluate

    p, folder = project.params, project.tmp / f"seed{seed}"
    prepared = p.data.prepared_dir
    base = base_params()
    start = time.perf_counter()
    mods = project.train_modules(seed, folder)
    mod_seconds = time.perf_counter() - start
    source = BundleSource({m: r.out_dir for m, r in mods.modules.items()}, mods.router_dir,
                          mods.router_sha256)  # fmt: skip
    bundle = evaluate_bundle(p.data, p.evaluate, p.modules, source, prepared_dir=prepared)
    start = time.perf_counter()
    shared = project.train_shared(seed, folder / "shared")
    shared_seconds = time.perf_counter() - start
    ev = evaluate(p.data, p.evaluate, shared.out_dir, prepared_dir=prepared)
    full, full_seconds, full_params = full_fine_tuning(project, seed, shared)
    per_module = max(adapter_params(r.adapter_dir) for r in mods.modules.values())
    methods = {
        "bundle": _figures(project, bundle, "candidate") | {
            "train_seconds": mod_seconds, "trainable_share": per_module / base},
        "shared": _figures(project, ev, "candidate") | {
            "train_seconds": shared_seconds,
            "trainable_share": adapter_params(shared.adapter_dir) / base},
        "full_ft": _figures(project, full, "full_ft") | {
            "train_seconds": full_seconds, "trainable_share": full_params / base},
        "source_only": _figures(project, ev, "base") | {
            "trainable_share": _tensor_params(shared.out_dir / BASE_HEAD_FILE) / base},
    }  # fmt: skip
    return {
        "seed": seed,
        "methods": methods,
        "router_accuracy": dict(bundle.info["router_accuracy"]),
        "routed_to": bundle.info["routed_to"],
        "steps": {"modules": mods.steps, "shared": shared.metadata["steps"]},
    }


def _figures(project: Project, result: EvaluationResult, model: str) -> dict[str, Any]:
    """Macro-F1 of ``model`` on the pooled target slice, without NFL, the source domain, and
    each target domain."""
    slices, data = result.slices, project.params.data

    def f1(name: str) -> float:
        return float(slices[name].scores[model].macro_f1)

    return {
        "targets": f1("targets"),
        "targets_without_nfl": f1("targets_without_nfl"),
        "source": f1(data.source_domain),
        "domains": {d: f1(d) for d in data.target_domains if d in slices},
    }


def full_fine_tuning(
    project: Project, seed: int, shared: TrainResult
) -> tuple[EvaluationResult, float, int]:
    """Every weight trained on the shared adapter's rows (target rows + source replay), from the
    same base head, with the standard loop of workloads.py (shuffled batches, AdamW: encoder
    lr 5e-5, head 3e-3) for ``train.max_epochs`` epochs; scored on the golden slices. Returns
    the scores (model ``full_ft``), the seconds of the epochs and the trainable parameters."""
    import mlra
    from mlra.base_model import load_base_model
    from mlra.candidate import load_base_head
    from mlra.classifier import SentenceClassifier, predict
    from mlra.data import LABELS
    from mlra.evaluation import EvaluationResult, golden_rows, label_indices, score_slices
    from mlra.training import load_training_data

    p = project.params
    tp = project.tp(seed, project.tmp / f"seed{seed}" / "shared")
    rows = load_training_data(p.data, tp, p.data.prepared_dir)
    encoder, tokenizer = load_base_model()
    model = SentenceClassifier(encoder, len(LABELS), pooling=tp.pooling)
    meta = mlra.inspect_adapter(shared.adapter_dir).metadata
    head = load_base_head(shared.out_dir, meta["base_head"]["sha256"], model.head.in_features,
                          len(LABELS))  # fmt: skip
    model.head.load_state_dict(head.state_dict())
    model.train().requires_grad_(True)
    s = dataclasses.replace(project.settings, batch_size=tp.batch_size,
                            max_length=tp.max_length, seed=seed)  # fmt: skip
    torch.manual_seed(seed)
    optimiser = optimiser_for(model, s, full=True)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(tp.max_epochs):
        peft_epoch(model, optimiser, tokenizer, rows.train_texts, rows.train_labels, s,
                   generator, CPU)  # fmt: skip
    seconds = time.perf_counter() - start
    golden = golden_rows(p.data, p.evaluate, p.data.prepared_dir)
    truth = label_indices(golden["label"], LABELS)
    pred = predict(model, tokenizer, list(golden["text"]), max_length=tp.max_length)
    slices = score_slices(p.data, p.evaluate, LABELS, list(golden["domain"]), truth,
                          {"full_ft": pred})  # fmt: skip
    result = EvaluationResult(tuple(LABELS), slices, ("full_ft",), "targets", {})
    return result, seconds, trainable(model)

"""Section 6: the adapter artifact: its size against the base model's weights, and the time to
save it, verify it and load it, each labelled with what it includes.

``load_adapter`` is timed alone, onto a model whose base is already in memory (the usual case: a
process switching or adding adapters); what a fresh process pays includes loading the base model,
timed separately with ``load_base_model``.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import Section, fmt_ms, fmt_ratio, interleaved, ratios
from benchmarks.workloads import Context, nudge_adapters


def measure(ctx: Context) -> dict[str, Any]:
    import safetensors.torch

    import mlra
    from mlra.base_model import base_model_path, load_base_model

    m, s = ctx.models, ctx.settings
    model = m.mlra()
    nudge_adapters(model)
    fresh = m.plain()
    base_file = base_model_path() / "model.safetensors"
    tmp = Path(tempfile.mkdtemp(prefix="mlra-bench-"))
    try:
        counter = itertools.count()
        state = {k: v.detach().contiguous() for k, v in m.pristine.encoder.state_dict().items()}

        def save() -> None:
            mlra.save_adapter(
                model,
                "a",
                tmp / "adapter",
                modules_to_save=["head"],
                overwrite=True,
                metadata={"bench": next(counter)},
            )

        def drop() -> None:
            if "a" in mlra.adapter_names(fresh):
                mlra.remove_adapter(fresh, "a")

        save()
        saves = interleaved(
            {
                "base_weights_save": lambda: safetensors.torch.save_file(
                    state, str(tmp / "base.safetensors")
                ),
                "save_adapter": save,
            },
            s.artifact_rounds,
        )
        loads = interleaved(
            {
                "load_base_model": load_base_model,
                "load_adapter": lambda: mlra.load_adapter(fresh, tmp / "adapter", strict=True),
                "inspect_adapter": lambda: mlra.inspect_adapter(tmp / "adapter"),
            },
            s.artifact_rounds,
            before={"load_adapter": drop},
        )
        size = sum(f.stat().st_size for f in (tmp / "adapter").iterdir())
        tensors = (tmp / "adapter" / "adapter_model.safetensors").stat().st_size
        return {
            "adapter_bytes": size,
            "adapter_tensor_bytes": tensors,
            "base_model_bytes": base_file.stat().st_size,
            "size_ratio": size / base_file.stat().st_size,
            "save": ratios(saves, "base_weights_save"),
            "load": ratios(loads, "load_base_model"),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(art: dict[str, Any]) -> list[str]:
    save, load = art["save"], art["load"]
    adapter, base = load["load_adapter"], load["load_base_model"]
    start = adapter["seconds"]["median"] + base["seconds"]["median"]
    return [
        "### 6. The artifact",
        "",
        f"Size: {art['adapter_bytes'] / 1e3:.0f} kB (tensors "
        f"{art['adapter_tensor_bytes'] / 1e3:.0f} kB) = {100 * art['size_ratio']:.2f}% of the "
        f"base model's weights file ({art['base_model_bytes'] / 1e6:.1f} MB).",
        "",
        "Measures: wall time of each call (median), in-process and warm (imports paid).",
        "",
        "| call | what it includes | time | ratio |",
        "|---|---|---|---|",
        f"| `save_adapter` | tensors, config, manifest with file hashes and base fingerprint "
        f"| {fmt_ms(save['save_adapter'])} | {fmt_ratio(save['save_adapter'])} of saving the "
        f"base weights with safetensors ({fmt_ms(save['base_weights_save'])}) |",
        f"| `inspect_adapter` | read every file, check its sha256 (no model) "
        f"| {fmt_ms(load['inspect_adapter'])} | |",
        f"| `load_adapter` | verify file hashes and the base fingerprint, add the adapter, copy "
        f"its tensors; base already in memory | {fmt_ms(adapter)} | {fmt_ratio(adapter)} of "
        f"`load_base_model` |",
        f"| `load_base_model` | the packaged MiniLM and tokenizer from disk | {fmt_ms(base)} | |",
        "",
        f"A fresh process serving the adapter pays `load_base_model` + `load_adapter` ≈ "
        f"{start * 1e3:.0f} ms (medians added), of which the adapter is "
        f"{100 * adapter['seconds']['median'] / start:.0f}%.",
    ]


SECTION = Section("artifact", measure, report)

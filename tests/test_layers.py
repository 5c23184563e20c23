"""The library's layers follow DESIGN.md's flow: no module imports one above it (a later step of
the flow), and the library never imports Prefect. Imports are read from the source (top-level and
inside functions alike), so a lazy import cannot hide a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MLRA = Path(__file__).resolve().parent.parent / "mlra"

# Lower first. A module may import its own layer and the layers below it.
LAYERS: list[tuple[str, ...]] = [
    # the core: no step of the flow
    (
        "mlra.errors",
        "mlra._hashing",
        "mlra._env",
        "mlra.redact",
        "mlra.config",
        "mlra.lineage",
        "mlra.spec",
        "mlra.adapters",
        "mlra.artifact",
        "mlra.signing",
        "mlra.base_model",
        "mlra.classifier",
        "mlra.router",  # the learned router: a linear layer over frozen features
        "mlra.metrics",
        "mlra.candidate",
        "mlra.audit",
        "mlra.witness",
        "mlra.governance",
        "mlra.tracking",
        "mlra",  # the package itself: the adapter API, lazily (exact name only)
    ),
    ("mlra.data",),  # ingest, prepare
    ("mlra.validation", "mlra._validation_html"),  # validate
    ("mlra.training",),  # train
    ("mlra.evaluation", "mlra.bundle", "mlra.bundle_pass", "mlra.bundle_eval"),  # evaluate
    ("mlra.registry",),  # register
    ("mlra.promotion",),  # gates, approval, promotion, rollback
    ("mlra.modules",),  # modules governed one by one, and the bundle record
    ("mlra.steps", "mlra.demo"),  # the steps over all of them
    ("mlra.cli",),  # the command
]


def _layer(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, names in enumerate(LAYERS):
        for name in names:
            hit = module == name or (name != "mlra" and module.startswith(name + "."))
            if hit and (best is None or len(name) > best[0]):
                best = (len(name), index)
    return None if best is None else best[1]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(MLRA.rglob("*.py")):
        parts = path.relative_to(MLRA.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}  # `from mlra import steps`
    return out


def test_every_module_has_a_layer() -> None:
    missing = [m for m in _modules() if _layer(m) is None]
    assert missing == [], f"add these to LAYERS (and to DESIGN.md's map): {missing}"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_imports_one_above_it(module: str) -> None:
    mine = _layer(module)
    assert mine is not None
    above = []
    for name in _imports(_modules()[module], module):
        if not name.startswith("mlra"):
            assert not name.startswith("prefect"), (
                f"{module} imports {name}: the library is Prefect-free"
            )
            continue
        theirs = _layer(name)
        if theirs is not None and theirs > mine and name in _modules():
            above.append(f"{name} ({' '.join(LAYERS[theirs])})")
    assert above == [], f"{module} imports modules of a later step: {above}"

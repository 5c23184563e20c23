"""Stable splits: a row's split is a function of its id alone.

:func:`split_of` hashes ``"{seed}:split:{id}"`` to a number in [0, 1) and cuts that range by the
shares in ``params.yaml`` — golden first, then test, val, train — so a row lands in the same split
on every run, whatever else is in the data (feedback added later moves nothing), and changing the
train/val shares leaves the golden set alone.

Target-domain rows whose second hash (``"{seed}:pool:{id}"``) falls below ``data.feedback_pool``
are held out of the splits altogether: they are the pool that ``mlra feedback simulate`` draws
"field feedback" from. Once such a row comes back through ``mlra ingest``, :func:`prepare` puts
it in its :func:`split_of` split like any other row.
"""

# pandas and pyarrow ship no type information (pandas-stubs is not a dependency)
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from mlra.config import Params, SplitShares
from mlra.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COLUMNS",
    "SPLITS",
    "PrepareResult",
    "cap_per_domain",
    "in_feedback_pool",
    "load_split",
    "prepare",
    "split_of",
]

Split = Literal["train", "val", "test", "golden"]
SPLITS: Final[tuple[Split, ...]] = ("train", "val", "test", "golden")
# Columns of every prepared split. ``origin`` is "corpus" or "feedback".
COLUMNS: Final = ("id", "text", "label", "domain", "origin")
MANIFEST: Final = "manifest.json"


def _unit_hash(seed: int, purpose: str, row_id: str) -> float:
    digest = hashlib.sha256(f"{seed}:{purpose}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(row_id: str, shares: SplitShares, seed: int = 0) -> Split:
    """The split of the row with id ``row_id``: a pure function of the id, the shares and seed."""
    u = _unit_hash(seed, "split", row_id)
    edge = 0.0
    for name in ("golden", "test", "val"):
        edge += getattr(shares, name)
        if u < edge:
            return name
    return "train"


def in_feedback_pool(row_id: str, share: float, seed: int = 0) -> bool:
    """Whether a target-domain row is held out as simulated field feedback."""
    return _unit_hash(seed, "pool", row_id) < share


def assign_splits(ids: Iterable[str], shares: SplitShares, seed: int = 0) -> list[Split]:
    """:func:`split_of` over many ids."""
    return [split_of(i, shares, seed) for i in ids]


@dataclasses.dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare` wrote: the folder, rows per split, and the manifest."""

    out_dir: Path
    counts: dict[str, int]
    manifest: dict[str, Any]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pool_mask(params: Params, frame: pd.DataFrame) -> list[bool]:
    seed, share = params.data.seed, params.data.feedback_pool
    targets = set(params.data.target_domains)
    return [
        d in targets and in_feedback_pool(i, share, seed)
        for i, d in zip(frame["id"], frame["domain"], strict=True)
    ]


def corpus_rows(params: Params, corpus: pd.DataFrame | None = None) -> pd.DataFrame:
    """The corpus rows that go into splits: all rows except the target domains' feedback pool."""
    from mlra.data.source import load_tweets

    frame = load_tweets() if corpus is None else corpus
    keep = [not pooled for pooled in _pool_mask(params, frame)]
    return frame.loc[keep].reset_index(drop=True)


def feedback_pool(params: Params, corpus: pd.DataFrame | None = None) -> pd.DataFrame:
    """The held-out target-domain rows that simulated field feedback is drawn from."""
    from mlra.data.source import load_tweets

    frame = load_tweets() if corpus is None else corpus
    return frame.loc[_pool_mask(params, frame)].reset_index(drop=True)


def prepare(
    params: Params,
    out_dir: str | Path | None = None,
    feedback_dir: str | Path | None = None,
    corpus: pd.DataFrame | None = None,
) -> PrepareResult:
    """Write ``{train,val,test,golden}.parquet`` and ``manifest.json`` under ``out_dir``.

    Rows: the corpus (:func:`corpus_rows`) plus every accepted feedback row in ``feedback_dir``
    (default ``data.feedback_dir``; absent or empty is fine). A feedback row with the id of a
    corpus row replaces it: it is the operator's correction. Each row goes to :func:`split_of`.

    The files are written next to their final names and renamed into place, the manifest last,
    so a reader never sees a half-written split. Returns what was written.
    """
    import pandas as pd

    from mlra.data.ingest import load_accepted

    out = Path(out_dir if out_dir is not None else params.data.prepared_dir)
    fb_dir = Path(feedback_dir if feedback_dir is not None else params.data.feedback_dir)
    base = corpus_rows(params, corpus).assign(origin="corpus")
    feedback = load_accepted(fb_dir)
    if len(feedback):
        fb = feedback[["id", "text", "label", "domain"]].assign(origin="feedback")
        base = base[~base["id"].isin(set(fb["id"]))]
        rows = pd.concat([base, fb], ignore_index=True)
    else:
        rows = base
    rows = rows[list(COLUMNS)].astype(dict.fromkeys(COLUMNS, "str"))
    rows["split"] = assign_splits(rows["id"], params.data.splits, params.data.seed)

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for name in SPLITS:
        part = rows[rows["split"] == name].drop(columns="split").sort_values("id", kind="stable")
        part = part.reset_index(drop=True)
        path = out / f"{name}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        part.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        counts[name] = len(part)
        files[name] = {
            "path": path.name,
            "rows": len(part),
            "sha256": _sha256_file(path),
            "by_domain_label": _counts(part),
        }
    manifest = {
        "format": 1,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": params.data.seed,
        "shares": dataclasses.asdict(params.data.splits),
        "feedback_pool": params.data.feedback_pool,
        "rows": len(rows),
        "corpus_rows": int((rows["origin"] == "corpus").sum()),
        "feedback_rows": int((rows["origin"] == "feedback").sum()),
        "splits": files,
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
    return PrepareResult(out_dir=out, counts=counts, manifest=manifest)


def _counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    table = frame.groupby(["domain", "label"]).size()
    result: dict[str, dict[str, int]] = {}
    for (domain, label), n in table.items():
        result.setdefault(str(domain), {})[str(label)] = int(n)
    return result


def load_split(prepared_dir: str | Path, name: str) -> pd.DataFrame:
    """Read one prepared split (``train``, ``val``, ``test`` or ``golden``) as a DataFrame."""
    import pandas as pd

    if name not in SPLITS:
        raise DataError(f"unknown split {name!r}: expected one of {', '.join(SPLITS)}")
    path = Path(prepared_dir) / f"{name}.parquet"
    if not path.is_file():
        raise DataError(f"no prepared split at {path}: run `mlra prepare` (or `dvc repro prepare`)")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the prepared split {path}: {exc}") from exc


def cap_per_domain(frame: pd.DataFrame, cap: int) -> pd.DataFrame:
    """At most ``cap`` rows per domain (0: all). Ids are content hashes, so the first rows by id
    are a fair sample that does not depend on file order."""
    frame = frame.sort_values("id", kind="stable")
    if cap > 0:
        frame = frame.groupby("domain", sort=True, group_keys=False).head(cap)
    return frame.reset_index(drop=True)

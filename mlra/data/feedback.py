"""Simulated field feedback: dated files of operators' labels for held-out target-domain rows.

The rows come from the feedback pool (:func:`mlra.data.splits.feedback_pool`): target-domain
tweets that :func:`~mlra.data.splits.prepare` keeps out of every split, so they are new to the
model when they arrive. Batch ``i`` is dated ``feedback.start_date + i * feedback.every_days``;
even batches are written as JSONL (with ``id``), odd ones as CSV (without ``id``, so ingest derives
it from the text, as for a real operator's spreadsheet). Output is a pure function of the corpus
and ``params.yaml``: running it twice writes the same bytes, and ingest then skips the files.
"""

# pandas and pyarrow ship no type information (pandas-stubs is not a dependency)
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

from mlra.config import Params
from mlra.data.source import LABELS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FEEDBACK_FIELDS", "simulate", "simulate_next"]

FEEDBACK_FIELDS: Final = ("id", "text", "label", "domain", "source", "created_at")
_OPERATORS: Final = ("operator:ana", "operator:bo", "operator:chen", "operator:dee")


def _hash(seed: int, purpose: str, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}:{key}".encode()).digest()[:8], "big")


def simulate(
    params: Params,
    out_dir: str | Path | None = None,
    corpus: pd.DataFrame | None = None,
    batches: int | None = None,
    first: int = 0,
) -> list[Path]:
    """Write ``feedback-YYYY-MM-DD.{jsonl,csv}`` files under ``out_dir`` (default the inbox):
    batches ``first`` to ``first + batches - 1`` (default ``feedback.batches`` of them).

    Returns the paths written. Fewer rows are written when the pool runs out.
    """
    from mlra.data.splits import feedback_pool

    cfg = params.feedback
    seed = params.data.seed
    out = Path(out_dir if out_dir is not None else params.data.inbox_dir)
    pool = feedback_pool(params, corpus)
    order = sorted(range(len(pool)), key=lambda i: _hash(seed, "order", pool["id"].iloc[i]))
    pool = pool.iloc[order].reset_index(drop=True)
    n_batches = cfg.batches if batches is None else batches

    written: list[Path] = []
    for b in range(first, first + n_batches):
        part = pool.iloc[b * cfg.rows_per_batch : (b + 1) * cfg.rows_per_batch]
        if part.empty:
            break
        day = cfg.start_date + dt.timedelta(days=b * cfg.every_days)
        rows = []
        for rid, text, label, domain in part[["id", "text", "label", "domain"]].itertuples(
            index=False
        ):
            seconds = _hash(seed, "time", rid) % 86_400
            stamp = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) + dt.timedelta(
                seconds=seconds
            )
            if _hash(seed, "relabel", rid) / 2**64 < cfg.relabel_share:
                others = [x for x in LABELS if x != label]
                label = others[_hash(seed, "newlabel", rid) % len(others)]
            rows.append(
                {
                    "id": rid,
                    "text": text,
                    "label": label,
                    "domain": domain,
                    "source": _OPERATORS[_hash(seed, "who", rid) % len(_OPERATORS)],
                    "created_at": stamp.isoformat().replace("+00:00", "Z"),
                }
            )
        rows.sort(key=lambda r: r["created_at"])
        if b % 2 == 0:
            path = out / f"feedback-{day.isoformat()}.jsonl"
            content = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        else:
            path = out / f"feedback-{day.isoformat()}.csv"
            buffer = io.StringIO()
            fields = [f for f in FEEDBACK_FIELDS if f != "id"]
            writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            content = buffer.getvalue()
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(content, encoding="utf-8", newline="")
        os.replace(tmp, path)
        written.append(path)
    return written


def simulate_next(
    params: Params, out_dir: str | Path | None = None, corpus: pd.DataFrame | None = None
) -> Path | None:
    """Write the first simulated batch that is neither in ``out_dir`` nor already ingested into
    the feedback store (by file name): the next week's feedback. None when the pool ran out."""
    from mlra.data.ingest import load_ledger

    out = Path(out_dir if out_dir is not None else params.data.inbox_dir)
    seen = {f["name"] for b in load_ledger(params.data.feedback_dir)["batches"] for f in b["files"]}
    if out.is_dir():
        seen |= {p.name for p in out.iterdir()}
    cfg = params.feedback
    b = 0
    while True:
        day = cfg.start_date + dt.timedelta(days=b * cfg.every_days)
        if {f"feedback-{day.isoformat()}.jsonl", f"feedback-{day.isoformat()}.csv"} & seen:
            b += 1
            continue
        written = simulate(params, out, corpus, batches=1, first=b)
        return written[0] if written else None

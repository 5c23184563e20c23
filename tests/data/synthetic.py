"""A small synthetic tweet corpus and parameters for fast data tests (no real corpus needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mlra.config import Params, params_from_dict
from mlra.data.source import LABELS, domain_of, row_id

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = {
    "airline": "@united flight {i} was {mood}",
    "nfl": "#deflategate take {i}: {mood}",
    "self_driving_cars": "driverless cars idea {i} is {mood}",
    "apple": "my iphone {i} feels {mood}",
    "coachella": "coachella lineup {i} looks {mood}",
    "claritin": "claritin dose {i} made me feel {mood}",
}
MOODS = {"negative": "awful", "neutral": "fine I guess", "positive": "great"}


def synthetic_corpus(per_domain: int = 300) -> pd.DataFrame:
    """``per_domain`` rows for each domain, labels cycling so each has every label."""
    rows = []
    for domain, template in TEMPLATES.items():
        for i in range(per_domain):
            label = LABELS[(i * 7 + len(domain)) % 3]
            text = template.format(i=i, mood=MOODS[label])
            assert domain_of(text) == domain, text
            rows.append({"id": row_id(text), "text": text, "label": label, "domain": domain})
    return pd.DataFrame(rows).astype("str")


def raw_params() -> dict[str, Any]:
    """The repository's params.yaml as plain data."""
    data = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def small_params(tmp: Path, **sections: dict[str, Any]) -> Params:
    """The repository's params with folders under ``tmp`` and thresholds for a small corpus.

    ``sections`` override keys per section, e.g. ``validation={"max_label_share": 0.4}``.
    """
    raw = raw_params()
    raw["data"] |= {
        "prepared_dir": str(tmp / "prepared"),
        "feedback_dir": str(tmp / "feedback"),
        "inbox_dir": str(tmp / "inbox"),
    }
    raw["validation"]["min_train_rows"] = 100
    raw["feedback"] |= {"batches": 3, "rows_per_batch": 40}
    for name, values in sections.items():
        raw[name] |= values
    return params_from_dict(raw)


def replace(params: Params, section: str, **values: Any) -> Params:
    """``params`` with some keys of one section replaced."""
    return dataclasses.replace(
        params, **{section: dataclasses.replace(getattr(params, section), **values)}
    )

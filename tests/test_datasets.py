"""Data set loaders: finding ../shared/data, TweetEval, deterministic Banking77 pairs."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

import needs
from speculabel.io import datasets
from speculabel.io.datasets import (
    DataMissing,
    banking77_pairs,
    hard_intent_pairs,
    shared_data_dir,
    tweeteval,
)


def _real_data() -> Path:
    return needs.data(shared_data_dir, "the shared data folder")


@pytest.fixture
def fake_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    tw = root / "tweeteval-sentiment"
    tw.mkdir(parents=True)
    (tw / "test_text.txt").write_text("bad day \nok\ngreat!\n", encoding="utf-8")
    (tw / "test_labels.txt").write_text("0\n1\n2\n", encoding="utf-8")
    b = root / "banking77"
    b.mkdir()
    rows = []
    for intent in ("card_arrival", "card_delivery_estimate", "age_limit", "top_up_failed"):
        for i in range(6):
            rows.append({"text": f"{intent} question {i}", "category": intent})
    with (b / "test.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows(rows)
    monkeypatch.setenv(datasets.ENV_VAR, str(root))
    return root


def test_env_var_wins_and_missing_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(datasets.ENV_VAR, str(missing))
    with pytest.raises(DataMissing) as e:
        shared_data_dir()
    assert str(missing) in str(e.value) and "SPECULABEL_DATA" in str(e.value)
    with pytest.raises(DataMissing) as e2:
        tweeteval("test", 3)
    assert str(missing / "tweeteval-sentiment") in str(e2.value)


def test_finds_shared_data_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "_repo_root", lambda: tmp_path / "elsewhere" / "repo")
    (tmp_path / "shared" / "data" / "banking77").mkdir(parents=True)
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    assert shared_data_dir("banking77") == tmp_path / "shared" / "data" / "banking77"
    with pytest.raises(DataMissing) as e:
        shared_data_dir("tweeteval-sentiment")
    assert "looked in" in str(e.value)


def test_tweeteval_fake(fake_data: Path) -> None:
    d = tweeteval("test")
    assert [it.fields["text"] for it in d.items] == ["bad day", "ok", "great!"]
    assert d.gold == ["negative", "neutral", "positive"]
    assert [it.id for it in d.items] == ["tweeteval-test-0", "tweeteval-test-1", "tweeteval-test-2"]
    assert len(tweeteval("test", limit=2)) == 2
    with pytest.raises(DataMissing):
        tweeteval("val")  # no val files in the fake folder
    with pytest.raises(ValueError):
        tweeteval("train")


def test_hard_intent_pairs() -> None:
    pairs = hard_intent_pairs(["card_arrival", "card_delivery_estimate", "age_limit",
                               "transfer_not_received_by_recipient", "card_not_working"])
    assert ("card_arrival", "card_delivery_estimate") in pairs
    assert ("card_arrival", "card_not_working") in pairs
    # "not" alone is a stop word: no hard pair through it
    assert ("card_not_working", "transfer_not_received_by_recipient") not in pairs
    assert all(a < b for a, b in pairs)


def test_banking77_pairs_fake(fake_data: Path) -> None:
    d = banking77_pairs(16, seed=3)
    assert len(d) == 16
    assert Counter(d.gold) == {"similar": 8, "not_similar": 8}
    kinds = d.info["kinds"]
    assert isinstance(kinds, list)
    assert Counter(kinds) == {"positive": 8, "hard_negative": 2, "easy_negative": 6}
    intent = {f"{i} question {k}": i for i in ("card_arrival", "card_delivery_estimate",
                                               "age_limit", "top_up_failed") for k in range(6)}
    for it, g, kind in zip(d.items, d.gold, kinds, strict=True):
        a, b = intent[it.fields["text_a"]], intent[it.fields["text_b"]]
        assert (a == b) == (g == "similar")
        if kind == "hard_negative":
            assert {a, b} == {"card_arrival", "card_delivery_estimate"}
        assert it.fields["text_a"] != it.fields["text_b"]
    assert banking77_pairs(16, seed=3).items == d.items
    assert banking77_pairs(16, seed=4).items != d.items


def test_tweeteval_real() -> None:
    _real_data()
    d = tweeteval("test", 500)
    assert len(d) == 500 and set(d.gold) == {"negative", "neutral", "positive"}
    assert d.items[0].fields["text"].startswith("@user @user what do these")
    assert d.gold[:3] == ["neutral", "neutral", "neutral"]


def test_banking77_pairs_real_is_deterministic_and_balanced() -> None:
    root = _real_data()
    d = banking77_pairs(500, seed=0)
    assert len(d) == 500
    assert Counter(d.gold) == {"similar": 250, "not_similar": 250}
    kinds = d.info["kinds"]
    assert isinstance(kinds, list)
    assert Counter(kinds) == {"positive": 250, "hard_negative": 62, "easy_negative": 188}
    keys = {(it.fields["text_a"], it.fields["text_b"]) for it in d.items}
    assert len(keys) == 500
    intent: dict[str, str] = {}
    with (root / "banking77" / "test.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            intent[" ".join(row["text"].split())] = row["category"]
    for it, g in zip(d.items, d.gold, strict=True):
        same = intent[it.fields["text_a"]] == intent[it.fields["text_b"]]
        assert same == (g == "similar")
    again = banking77_pairs(500, seed=0)
    assert again.items == d.items and again.gold == d.gold
    # pinned: the first pair of seed 0 never changes between runs or machines
    assert d.items[0].fields == {"text_a": "I have a pending transfer",
                                 "text_b": "Is GBP a supported currency?"}

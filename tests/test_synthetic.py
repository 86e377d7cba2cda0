"""SYNTHETIC demo data: deterministic, offline, transferable through text, labelled everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recbench.cli import app
from recbench.data.catalog import get_dataset_spec, get_suite
from recbench.data.dataset import load_dataset
from recbench.data.download import download
from recbench.data.synthetic import generate
from recbench.errors import DataError
from recbench.results.report import RunResult, build_report

SMALL = {"users": 120, "items": 60, "topics": 6}


def topic_words(text: str) -> set[str]:
    return set(re.findall(r"\bt\d+w\d+\b", text))


def item_topic(text: str) -> int:
    (topic,) = {int(w[1:].split("w")[0]) for w in topic_words(text)}
    return topic


def test_same_parameters_give_the_same_data_and_other_seeds_do_not() -> None:
    first, again = generate("synthetic-x", {**SMALL, "seed": 4}), generate("synthetic-x", {**SMALL, "seed": 4})
    other = generate("synthetic-x", {**SMALL, "seed": 5})
    assert first.fingerprint == again.fingerprint != other.fingerprint


def test_domains_share_topic_vocabulary_but_not_items() -> None:
    alpha = generate("synthetic-x", {**SMALL, "domain": "alpha", "seed": 1})
    beta = generate("synthetic-y", {**SMALL, "domain": "beta", "seed": 2})
    words = [set().union(*map(topic_words, d.item_texts)) for d in (alpha, beta)]
    assert len(words[0] & words[1]) >= 0.9 * len(words[0] | words[1])
    assert not set(alpha.item_ids) & set(beta.item_ids)
    assert all(t.startswith("synthetic alpha") for t in alpha.item_texts)


def test_sequences_follow_topics_that_text_reveals() -> None:
    stay = 0.75
    data = generate("synthetic-x", {**SMALL, "stay": stay})
    topics = np.array([0] + [item_topic(t) for t in data.item_texts])  # item id -> topic
    same = consecutive = nxt = 0
    for user in range(data.num_users):
        seq = topics[data.sequence(user)]
        same += int((seq[1:] == seq[:-1]).sum())
        nxt += int((seq[1:] == (seq[:-1] + 1) % SMALL["topics"]).sum())
        consecutive += len(seq) - 1
    # Next topic = same (p = stay) or the next one (1 - stay); nothing else.
    assert same / consecutive == pytest.approx(stay, abs=0.05)
    assert (same + nxt) == consecutive


def test_names_must_say_synthetic_and_parameters_are_checked() -> None:
    with pytest.raises(DataError, match="must start with 'synthetic'"):
        generate("arts", SMALL)
    with pytest.raises(DataError, match="unknown synthetic generator parameter"):
        generate("synthetic-x", {"user": 10})


def test_download_generates_the_catalogued_demo_offline_and_labels_it(recbench_home: Path) -> None:
    assert get_dataset_spec("synthetic-c").synthetic
    suite = get_suite("demo")
    assert all(name.startswith("synthetic-") for name in (*suite.sources, *suite.targets))
    result = download("synthetic-c")
    assert any("SYNTHETIC" in m for m in result.messages)
    stored = load_dataset("synthetic-c")
    assert stored.fingerprint == generate("synthetic-c", get_dataset_spec("synthetic-c").generator).fingerprint
    assert "SYNTHETIC" in stored.manifest["source"]["note"]
    listing = CliRunner().invoke(app, ["list", "datasets"])
    assert re.search(r"synthetic-c\s.*SYNTHETIC", listing.output)


def test_report_captions_on_synthetic_data_say_so() -> None:
    ranks = np.arange(1, 21, dtype=np.int32)
    protocol = {
        "split": "test",
        "candidates": "all items",
        "num_candidates": 30,
        "mask_history": False,
        "ties": "pessimistic",
    }
    report = build_report(
        [RunResult("synthetic-b", "sasrec", 2020, ranks, protocol), RunResult("real", "sasrec", 2020, ranks, protocol)]
    )
    markdown, latex = report.to_markdown(), report.to_latex()
    assert markdown.count("SYNTHETIC") == 1 and latex.count("SYNTHETIC") == 1
    assert "\\caption{SYNTHETIC" in latex

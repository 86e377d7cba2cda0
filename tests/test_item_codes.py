"""Item codes imported from a faiss IVF-PQ index (VQ-Rec's official codes): the bit layout, the UniSRec
row order, the checked cache entry, the fallback for items without a code, and their use in a run.

The data are made here: UniSRec files of a small dataset whose item2index numbers, file order and
recbench item ids all differ, and an index trained as VQ-Rec's pq.py trains it
(``OPQ4,IVF1,PQ4x4``, inner product) on random vectors of the "strict" items, then filled with them
in increasing UniSRec index. A copy of the files with every item's vector as ``Toy.feat1CLS`` (raw
float32 in item2index order) is imported the way the official fine-tuning codes a target: every
item's vector encoded by the index. The tests cross-check codes against ``index.sa_encode`` of each
item's own vector and against ``index.add`` + the list's new rows (the official route).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recbench.cli import app
from recbench.data.codes import (
    CODED_BY_ROWS,
    CODED_BY_VECTORS,
    codes_digest,
    codes_path,
    encode_with_index,
    import_faiss_codes,
    load_item_codes,
    read_index_codes,
    strict_item_tokens,
    unpack_pq_codes,
)
from recbench.data.dataset import Dataset, load_dataset
from recbench.data.download import import_local
from recbench.data.encode import EncoderSpec, save_embeddings
from recbench.errors import ConfigError, DataError, RecbenchError, RunError
from recbench.method import ItemCodes
from recbench.names import InvalidNameError
from recbench.registry import get_method, resolve_config
from recbench_plugins.vqrec import VQRec, encode_codes, fill_missing_codes, offset_codes

DIM, CODE_DIM, BITS = 16, 4, 4
STRICT, ITEMS_PER_USER = 300, 5  # OPQ trains its rotation with 256 centroids: at least 256 strict items
COLD = 4  # items that occur only as valid/test targets: no row in the index
VQREC = {
    "hidden_size": 16,
    "inner_size": 16,
    "code_dim": CODE_DIM,
    "code_cap": 2**BITS,
    "max_seq_length": 10,
    "epochs": 2,
    "reassign_steps": 1,
}


# --- the data: UniSRec files, an index of their strict items, the toy dataset ---------------------
def write_unisrec(directory: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """UniSRec files of 60 users over 300 strict items, 4 valid/test-only items and 1 unused item.

    UniSRec numbers are a random permutation of the tokens and item2index lists them in random
    order, so neither the file order nor recbench's ids (which skip the unused item) give the rows.
    Returns the tokens (strict ones first), their UniSRec numbers and a random vector per token.
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    tokens = [f"T{j:03d}" for j in range(STRICT + COLD + 1)]
    number = rng.permutation(len(tokens))  # token j has UniSRec index number[j]
    strict, cold = np.arange(STRICT), np.arange(STRICT, STRICT + COLD)  # positions in ``tokens``; the last is unused
    order = rng.permutation(STRICT)
    sequences = []
    for user in range(STRICT // ITEMS_PER_USER):
        part = [int(number[j]) for j in order[user * ITEMS_PER_USER : (user + 1) * ITEMS_PER_USER]]
        valid, test = (int(number[j]) for j in rng.choice(strict, 2))
        if user < COLD - 1:
            test = int(number[cold[user]])  # three cold test targets
        if user == COLD - 1:
            valid = int(number[cold[-1]])  # and one cold valid target (in that user's test history)
        sequences.append((part, valid, test))
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    train, valid_rows, test_rows = [header], [header], [header]
    for user, (part, valid, test) in enumerate(sequences):
        for cut in range(len(part) - 1, 0, -1):  # longest prefix first, as UniSRec writes
            train.append(f"{user}\t{' '.join(map(str, part[:cut]))}\t{part[cut]}\n")
        valid_rows.append(f"{user}\t{' '.join(map(str, part))}\t{valid}\n")
        test_rows.append(f"{user}\t{' '.join(map(str, [*part, valid]))}\t{test}\n")
    (directory / "Toy.train.inter").write_text("".join(train))
    (directory / "Toy.valid.inter").write_text("".join(valid_rows))
    (directory / "Toy.test.inter").write_text("".join(test_rows))
    lines = [f"{tokens[j]}\t{number[j]}\n" for j in rng.permutation(len(tokens))]
    (directory / "Toy.item2index").write_text("".join(lines))
    (directory / "Toy.user2index").write_text("".join(f"U{u}\t{u}\n" for u in range(len(sequences))))
    texts = "".join(f"{token}\tthing {token}\n" for token in tokens)
    (directory / "Toy.text").write_text("item_id:token\ttext:token_seq\n" + texts)
    vectors = rng.normal(size=(len(tokens), DIM)).astype(np.float32)
    return {"tokens": np.array(tokens), "number": number, "vectors": vectors}


RECIPE = f"OPQ{CODE_DIM},IVF1,PQ{CODE_DIM}x{BITS}"  # VQ-Rec's pq.py: OPQ{M},IVF1,PQ{M}x{bits}


def plain(bits: int = BITS) -> str:
    """An index without OPQ, where the rotation does not matter (much faster to train). ``np``: no
    polysemous training, which faiss runs for 8-bit codes (it only relabels centroids, for seconds)."""
    return f"IVF1,PQ{CODE_DIM}x{bits}np"


PLAIN = plain()


def train_index(vectors: np.ndarray, factory: str = RECIPE) -> faiss.Index:
    """VQ-Rec's pq.py recipe: trained on the strict items' vectors, then those added in the same order."""
    index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    if factory.startswith("OPQ"):
        # 5 instead of 50 OPQ iterations: what is tested (layout, row order) does not depend on how well
        # the rotation fits, and 50 iterations of its 256-centroid PQ take most of a minute here.
        faiss.downcast_VectorTransform(index.chain.at(0)).niter = 5
    index.train(vectors)
    index.add(vectors)
    return index


def strict_in_row_order(data: dict[str, np.ndarray]) -> np.ndarray:
    """Positions (in ``tokens``) of the strict items by increasing UniSRec index: row k is the k-th."""
    strict = np.arange(STRICT)
    return strict[np.argsort(data["number"][strict])]


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread() -> Iterator[None]:
    """faiss on one thread in this module: its OpenMP threads spin on a loaded machine (10x slower here)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """UniSRec files, their vectors and an index of the strict items, written once for the module."""
    root = tmp_path_factory.mktemp("codes")
    data = write_unisrec(root / "Toy")
    rows = strict_in_row_order(data)
    index = train_index(data["vectors"][rows])
    faiss.write_index(index, str(root / "toy.index"))
    shutil.copytree(root / "Toy", root / "ToyFeat")  # the same files with the items' vectors
    write_features(root / "ToyFeat" / "Toy.feat1CLS", data["vectors"], data["number"])
    return {
        "dir": root / "Toy",
        "feat_dir": root / "ToyFeat",
        "index": root / "toy.index",
        "faiss": index,
        "rows": rows,
        **data,
    }


def write_features(path: Path, vectors: np.ndarray, number: np.ndarray) -> None:
    """Write a UniSRec feature file: raw float32, row k = the vector of the item with item2index number k."""
    rows = np.zeros_like(vectors)
    rows[number] = vectors
    rows.tofile(path)


@pytest.fixture
def toy(source: dict, recbench_home: Path) -> Dataset:
    """The dataset imported from the UniSRec files, with the vectors stored as its text embeddings."""
    dataset = import_local("toy", source["dir"], "unisrec").dataset
    table = np.zeros((dataset.num_items + 1, DIM), dtype=np.float32)
    position = {token: j for j, token in enumerate(source["tokens"])}
    for item, token in enumerate(dataset.item_ids, start=1):
        table[item] = source["vectors"][position[token]]
    save_embeddings(dataset, EncoderSpec(), table, "test vectors")  # the default encoder's cache entry
    return dataset


def own_codes(source: dict, tokens: list[str]) -> np.ndarray:
    """(len(tokens), M) codes of the tokens' own vectors under the index (sa_encode)."""
    position = {token: j for j, token in enumerate(source["tokens"])}
    vectors = source["vectors"][[position[token] for token in tokens]]
    return encode_codes(source["faiss"], vectors, CODE_DIM, 2**BITS)


# --- (a) the bit layout ------------------------------------------------------------------------
def list_bytes(index: faiss.Index) -> np.ndarray:
    """The raw bytes of the single inverted list of an IVF index, one row per stored vector."""
    invlists = faiss.extract_index_ivf(index).invlists
    count = invlists.list_size(0)
    return faiss.rev_swig_ptr(invlists.get_codes(0), count * invlists.code_size).copy().reshape(count, -1)


def test_list_codes_are_the_sa_encode_bytes_of_the_added_vectors(source: dict) -> None:
    vectors = source["vectors"][source["rows"]]
    assert np.array_equal(list_bytes(source["faiss"]), source["faiss"].sa_encode(vectors))  # the recipe, OPQ too
    for bits in (5, 8):  # codes that straddle bytes, and one byte per code
        index = train_index(vectors, plain(bits))
        assert np.array_equal(list_bytes(index), index.sa_encode(vectors))  # IVF1: sa_encode writes no list number


def test_read_index_codes_unpacks_as_encode_codes(source: dict, tmp_path: Path) -> None:
    read = read_index_codes(source["index"])
    assert read.description == "IndexPreTransform(LinearTransform) + IndexIVFPQ(nlist 1, M 4, 4 bits)"
    vectors = source["vectors"][source["rows"]]
    assert np.array_equal(read.codes, encode_codes(source["faiss"], vectors, CODE_DIM, 2**BITS))
    for bits in (5, 8):
        index = train_index(vectors, plain(bits))
        faiss.write_index(index, str(tmp_path / "index"))
        read = read_index_codes(tmp_path / "index")
        assert (read.code_dim, read.bits, read.description) == (
            CODE_DIM,
            bits,
            f"IndexIVFPQ(nlist 1, M 4, {bits} bits)",
        )
        assert np.array_equal(read.codes, encode_codes(index, vectors, CODE_DIM, 2**bits))


# --- (b) the UniSRec row order ------------------------------------------------------------------
def test_imported_codes_are_each_items_own_code(source: dict, toy: Dataset) -> None:
    stored = import_faiss_codes(toy, source["index"], source["dir"], "official")
    tokens = list(source["tokens"][source["rows"]])
    assert strict_item_tokens(source["dir"])[0] == tokens
    ids = np.array([toy.item_ids.index(token) + 1 for token in tokens])
    assert not np.array_equal(ids, np.arange(1, STRICT + 1))  # so row k + 1 = item id k would fail
    assert np.array_equal(stored.codes[ids], own_codes(source, tokens))
    cold = [toy.item_ids.index(token) + 1 for token in source["tokens"][STRICT : STRICT + COLD]]
    assert stored.has_code.sum() == STRICT and not stored.has_code[[0, *cold]].any()
    assert not stored.codes[[0, *cold]].any()
    record = stored.record
    assert (record["items"], record["items_with_code"], record["items_without_code"]) == (STRICT + COLD, STRICT, COLD)
    assert sorted(record["without_code"]) == sorted(source["tokens"][STRICT : STRICT + COLD])
    distinct, counts = np.unique(stored.codes[ids], axis=0, return_counts=True)
    assert record["distinct_code_rows"] == len(distinct)
    assert record["items_sharing_a_code"] == int(counts[counts > 1].sum())
    assert record["coded_but_not_training"] == record["training_but_without_code"] == 0
    assert record["coded_by"] == CODED_BY_ROWS and "features" not in record
    assert record["source_sha256"] == hashlib.sha256(source["index"].read_bytes()).hexdigest()


def test_cli_imports_codes_and_reports_them(source: dict, toy: Dataset) -> None:
    arguments = ["encode", "toy", "--import-codes", str(source["index"]), "--unisrec-dir", str(source["dir"])]
    result = CliRunner().invoke(app, [*arguments, "--codes-name", "mine", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["name"], report["items_with_code"], report["items_without_code"]) == ("mine", STRICT, COLD)
    assert report["sha256"] == load_item_codes(toy, "mine").sha256
    result = CliRunner().invoke(app, arguments)  # human output, default name
    assert result.exit_code == 0, result.output
    assert f"{STRICT} of {STRICT + COLD} items mapped" in result.output and "4 items have no code" in result.output
    assert "index rows" in result.output and "no item vectors (DIR/X.feat1CLS or --features FILE)" in result.output
    assert codes_path(toy, "official").is_file()
    alone = CliRunner().invoke(app, ["encode", "toy", "--import-codes", str(source["index"])])
    assert alone.exit_code == 1 and "--unisrec-dir DIR go together" in alone.output


# --- (c) clear errors at import -------------------------------------------------------------------
def test_import_refuses_what_it_cannot_map(source: dict, toy: Dataset, tmp_path: Path) -> None:
    vectors = source["vectors"][source["rows"]]

    def refused(index_file: Path, match: str, unisrec: Path | None = None) -> None:
        with pytest.raises(DataError, match=match):
            import_faiss_codes(toy, index_file, unisrec or source["dir"], "bad")

    (tmp_path / "garbage").write_bytes(b"not an index at all" * 10)
    refused(tmp_path / "garbage", "not a readable faiss index")
    refused(tmp_path / "absent", "no such file")
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors)
    faiss.write_index(flat, str(tmp_path / "flat"))
    refused(tmp_path / "flat", "a faiss IndexFlatIP, not an IVF-PQ index")
    faiss.write_index(train_index(vectors, "IVF2,PQ4x4"), str(tmp_path / "ivf2"))
    refused(tmp_path / "ivf2", "IVF-PQ with 2 inverted lists")
    fewer = faiss.index_factory(DIM, PLAIN, faiss.METRIC_INNER_PRODUCT)
    fewer.train(vectors)
    fewer.add(vectors[:-1])
    faiss.write_index(fewer, str(tmp_path / "fewer"))
    refused(tmp_path / "fewer", f"{STRICT - 1} code rows but .* name {STRICT} training items")
    renamed = tmp_path / "Renamed"
    renamed.mkdir()
    for file in source["dir"].iterdir():
        (renamed / file.name).write_text(file.read_text().replace("T007\t", "X007\t"))
    refused(source["index"], "1 of the index's 300 items are not items of dataset 'toy' \\(e.g. 'X007'\\)", renamed)
    with pytest.raises(InvalidNameError):
        import_faiss_codes(toy, source["index"], source["dir"], "../up")
    assert not codes_path(toy, "bad").exists()


# --- (d) the cache entry is checked on every read ---------------------------------------------------
def test_a_changed_or_tampered_entry_is_refused(source: dict, toy: Dataset) -> None:
    stored = import_faiss_codes(toy, source["index"], source["dir"], "official")
    path, sidecar = stored.path, stored.path.with_suffix(".json")
    again = load_item_codes(toy, "official")
    assert again.sha256 == stored.sha256 and np.array_equal(again.codes, stored.codes)
    original, record = path.read_bytes(), json.loads(sidecar.read_text())

    def refused(match: str) -> None:
        with pytest.raises(DataError, match=match) as caught:
            load_item_codes(toy, "official")
        assert "--import-codes" in str(caught.value) and "\n" not in str(caught.value)
        path.write_bytes(original)
        sidecar.write_text(json.dumps(record))

    def rewrite(codes: np.ndarray, has_code: np.ndarray, **sidecar_updates: object) -> None:
        np.savez(buffer := io.BytesIO(), codes=codes, has_code=has_code)
        path.write_bytes(buffer.getvalue())
        updates = {"sha256": hashlib.sha256(buffer.getvalue()).hexdigest(), **sidecar_updates}
        sidecar.write_text(json.dumps({**record, **updates}))

    changed = stored.codes.copy()
    changed[1, 0] = (changed[1, 0] + 1) % 2**BITS
    np.savez(path, codes=changed, has_code=stored.has_code)  # the file changed, the sidecar did not
    refused("does not match the sha256 in its sidecar")
    rewrite(changed, stored.has_code)  # a consistent file sha256, but other content
    refused("do not match the content digest")
    out_of_range = stored.codes.copy()
    out_of_range[1, 0] = 2**BITS
    rewrite(out_of_range, stored.has_code, content_sha256=codes_digest(out_of_range, stored.has_code, 2**BITS))
    refused("outside 0..15")
    rewrite(np.array([object()] * 3, dtype=object), stored.has_code)  # a pickle is refused, never run
    refused("allow_pickle=False")
    sidecar.unlink()
    refused("no sidecar")
    sidecar.write_text(json.dumps({**record, "fingerprint": "0" * 64}))
    refused("the dataset changed since the codes were imported")
    with pytest.raises(DataError, match="has no item codes 'other'.*--codes-name other"):
        load_item_codes(toy, "other")


def test_reimporting_a_changed_index_changes_the_digest_only_when_the_codes_change(
    source: dict, toy: Dataset, tmp_path: Path
) -> None:
    first = import_faiss_codes(toy, source["index"], source["dir"], "official")
    same = import_faiss_codes(toy, source["index"], source["dir"], "official")
    assert same.sha256 == first.sha256  # the .npz bytes may differ (zip times); the content does not
    other = train_index(np.random.default_rng(7).normal(size=(STRICT, DIM)).astype(np.float32), PLAIN)
    faiss.write_index(other, str(tmp_path / "other.index"))
    changed = import_faiss_codes(toy, tmp_path / "other.index", source["dir"], "official")
    assert changed.sha256 != first.sha256 and changed.record["source_sha256"] != first.record["source_sha256"]
    assert load_item_codes(toy, "official").sha256 == changed.sha256


# --- (e) the fallback for items without a code ------------------------------------------------------
def small_codes(has_code: list[bool]) -> ItemCodes:
    codes = torch.arange(len(has_code) * 2).view(-1, 2) % 8
    mask = torch.tensor(has_code)
    codes[~mask] = 0
    return ItemCodes(codes=codes, has_code=mask, num_codes=8, name="t", sha256="x")


def test_nearest_copies_the_code_of_the_most_text_similar_coded_item() -> None:
    imported = small_codes([False, True, True, True, False, False])
    text = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0.1, 2.0], [0, 0]], dtype=torch.float32)
    text[5] = text[1] + text[3]  # zero vector: equally (un)like everyone, so the lowest coded id
    filled = fill_missing_codes(imported, text, "nearest", seed=0, block=1)
    assert torch.equal(filled[4], imported.codes[2]) and torch.equal(filled[5], imported.codes[1])
    assert torch.equal(filled[:4], imported.codes[:4])


def test_random_codes_are_seeded_per_item() -> None:
    few, many = small_codes([False, True, False, True, True]), small_codes([False, False, False, True, False])
    first = fill_missing_codes(few, None, "random", seed=3)
    assert torch.equal(first[2], fill_missing_codes(many, None, "random", seed=3)[2])  # not the other items
    assert torch.equal(first, fill_missing_codes(few, None, "random", seed=3))
    assert not torch.equal(first[2], fill_missing_codes(few, None, "random", seed=4)[2])
    assert ((first >= 0) & (first < 8)).all() and torch.equal(first[0], torch.zeros(2, dtype=torch.long))


# --- (f) VQ-Rec with imported codes ----------------------------------------------------------------
def test_vqrec_runs_on_imported_codes_and_a_reimport_is_another_run(source: dict, toy: Dataset, tmp_path) -> None:
    from recbench.runs.experiment import evaluate_run, run_experiment

    import_faiss_codes(toy, source["index"], source["dir"], "official")
    settings = {**VQREC, "item_codes": "imported:official"}

    def run():
        return run_experiment("vqrec", "toy", overrides=[settings], runs_dir=tmp_path / "runs", show_progress=False)

    first = run()
    assert not first.reused and first.run.is_finished
    record = json.loads((first.run.path / "config.json").read_text())
    digest = load_item_codes(toy, "official").sha256
    assert record["item_codes"] == {"name": "official", "sha256": digest, "items_without_code": COLD}
    codes = first.run.load_best()["codes"]
    tokens = list(source["tokens"][source["rows"]])
    ids = [toy.item_ids.index(token) + 1 for token in tokens]
    expected = offset_codes(torch.from_numpy(own_codes(source, tokens)), 2**BITS)
    assert torch.equal(codes[ids], expected) and not codes[0].any()
    cold = [toy.item_ids.index(token) + 1 for token in source["tokens"][STRICT : STRICT + COLD]]
    assert (codes[cold] > 0).all()  # coded by the nearest fallback, a copy of some coded item
    assert all(any(torch.equal(codes[item], codes[other]) for other in ids) for item in cold)
    assert run().reused
    other = train_index(np.random.default_rng(7).normal(size=(STRICT, DIM)).astype(np.float32), PLAIN)
    faiss.write_index(other, str(tmp_path / "other.index"))
    import_faiss_codes(toy, tmp_path / "other.index", source["dir"], "official")
    with pytest.raises(RunError, match="imported again since run"):
        evaluate_run(first.run.path, protocol="full-masked", device="cpu")
    second = run()
    assert not second.reused and second.run.path != first.run.path


def test_codes_that_do_not_fit_the_config_fail_before_training(source: dict, toy: Dataset, tmp_path) -> None:
    from recbench.runs.experiment import build_method, run_experiment

    import_faiss_codes(toy, source["index"], source["dir"], "official")

    def run(**changes: object) -> None:
        run_experiment(
            "vqrec",
            "toy",
            overrides=[{**VQREC, "item_codes": "imported:official", **changes}],
            runs_dir=tmp_path / "runs",
            show_progress=False,
        )

    with pytest.raises(ConfigError, match=re.escape("code_dim = 8 but item codes 'official' have 4 codes per item")):
        run(code_dim=8)
    with pytest.raises(ConfigError, match=re.escape("code_cap = 64 but item codes 'official' take 16 values")):
        run(code_cap=64)
    with pytest.raises(DataError, match="has no item codes 'absent'"):
        run(item_codes="imported:absent")
    with pytest.raises(ConfigError, match="item_codes"):
        resolve_config(get_method("vqrec"), {"item_codes": "bert"})
    assert not (tmp_path / "runs").exists()  # nothing was trained
    entry = get_method("vqrec")
    config = resolve_config(entry, {**VQREC, "item_codes": "imported:official", "missing_codes": "random"})
    with pytest.raises(RecbenchError, match="cannot pre-train"):
        build_method(entry, config, load_dataset("toy"), pretraining=True)
    pretraining = VQRec.pretraining_config(config)  # the sources are coded from their text
    assert pretraining.item_codes == "text" and pretraining.missing_codes == "nearest"
    assert pretraining == VQRec.pretraining_config(resolve_config(entry, VQREC))  # the run a text-codes config shares


# --- (g) every item's vector encoded by the index, as the official fine-tuning -----------------------
def official_fine_tuning_codes(index_file: Path, features: np.ndarray) -> np.ndarray:
    """VQ-Rec's ``VQRecDataset.load_index``: read the index, add the target's features, take the new rows
    of the list (row k = the item with item2index number k), unpacked."""
    index = faiss.read_index(str(index_file))
    old = index.ntotal
    index.add(features)
    return unpack_pq_codes(list_bytes(index)[old:], CODE_DIM, BITS)


def item_of(toy: Dataset, tokens) -> np.ndarray:
    return np.array([toy.item_ids.index(token) + 1 for token in tokens])


def test_sa_encode_writes_the_bytes_add_stores(source: dict) -> None:
    features = np.fromfile(source["feat_dir"] / "Toy.feat1CLS", dtype=np.float32).reshape(-1, DIM)
    index = faiss.read_index(str(source["index"]))
    old = index.ntotal
    index.add(features)  # every item, cold and unused ones too, after the stored strict rows
    assert np.array_equal(list_bytes(index)[old:], index.sa_encode(features))
    assert np.array_equal(
        encode_with_index(source["index"], features), official_fine_tuning_codes(source["index"], features)
    )


def test_every_item_is_coded_by_encoding_its_vector(source: dict, toy: Dataset) -> None:
    stored = import_faiss_codes(toy, source["index"], source["feat_dir"], "official")  # finds Toy.feat1CLS
    tokens = list(toy.item_ids)
    ids = item_of(toy, tokens)
    assert np.array_equal(stored.codes[ids], own_codes(source, tokens))  # faiss's sa_encode of each vector
    features = np.fromfile(source["feat_dir"] / "Toy.feat1CLS", dtype=np.float32).reshape(-1, DIM)
    official = official_fine_tuning_codes(source["index"], features)
    number = dict(zip(source["tokens"], source["number"]))
    assert np.array_equal(stored.codes[ids], official[[number[token] for token in tokens]])  # pq_codes[int(token)]
    assert stored.has_code[1:].all() and not stored.has_code[0] and not stored.codes[0].any()
    record = stored.record
    assert record["coded_by"] == CODED_BY_VECTORS
    assert (record["items"], record["items_with_code"], record["items_without_code"]) == (STRICT + COLD,) * 2 + (0,)
    assert record["features"] == str((source["feat_dir"] / "Toy.feat1CLS").resolve())
    assert record["features_sha256"] == hashlib.sha256((source["feat_dir"] / "Toy.feat1CLS").read_bytes()).hexdigest()
    assert record["features_rows"] == STRICT + COLD + 1  # the unused item has a row too
    assert (record["strict_rows"], record["strict_rows_equal"]) == (STRICT, STRICT)  # the vectors the index holds
    distinct, counts = np.unique(stored.codes[1:], axis=0, return_counts=True)
    assert record["distinct_code_rows"] == len(distinct)
    assert record["items_sharing_a_code"] == int(counts[counts > 1].sum())
    assert load_item_codes(toy, "official").sha256 == stored.sha256


def test_the_strict_rows_check_counts_stored_rows_equal_to_re_encoding(
    source: dict, toy: Dataset, tmp_path: Path
) -> None:
    vectors = source["vectors"].copy()
    changed = np.random.default_rng(3).choice(STRICT, 40, replace=False)  # some strict items' vectors moved
    vectors[changed] = np.random.default_rng(4).normal(size=(len(changed), DIM)).astype(np.float32)
    write_features(tmp_path / "moved.feat", vectors, source["number"])
    stored = import_faiss_codes(toy, source["index"], source["feat_dir"], "moved", features=tmp_path / "moved.feat")
    assert stored.record["features"] == str((tmp_path / "moved.feat").resolve())  # the explicit file wins
    rows = read_index_codes(source["index"]).codes
    tokens = list(source["tokens"][source["rows"]])  # row k's item
    position = {token: j for j, token in enumerate(source["tokens"])}
    encoded = encode_codes(source["faiss"], vectors[[position[token] for token in tokens]], CODE_DIM, 2**BITS)
    brute = sum(np.array_equal(rows[k], encoded[k]) for k in range(STRICT))
    assert STRICT - len(changed) <= brute < STRICT
    assert (stored.record["strict_rows"], stored.record["strict_rows_equal"]) == (STRICT, brute)
    assert np.array_equal(stored.codes[item_of(toy, tokens)], encoded)  # the re-encoded codes, not the rows
    arguments = ["encode", "toy", "--import-codes", str(source["index"]), "--unisrec-dir", str(source["dir"])]
    result = CliRunner().invoke(app, [*arguments, "--features", str(tmp_path / "moved.feat")])
    assert result.exit_code == 0, result.output
    assert f"check: {brute} of the index's {STRICT} stored rows equal" in result.output
    assert f"{STRICT - brute} stored rows differ from their item's re-encoded vector" in result.output


def test_a_features_file_of_the_wrong_size_is_refused(source: dict, toy: Dataset, tmp_path: Path) -> None:
    good = (source["feat_dir"] / "Toy.feat1CLS").read_bytes()
    rows = STRICT + COLD + 1

    def refused(data: bytes | None, match: str) -> None:
        path = tmp_path / "bad.feat"
        path.unlink(missing_ok=True)
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(DataError, match=match) as caught:
            import_faiss_codes(toy, source["index"], source["dir"], "bad", features=path)
        assert "\n" not in str(caught.value)

    refused(good + b"abc", f"= {rows}.05 rows of {DIM} float32, expected {rows} rows")  # not a multiple of 4 d
    refused(good[: -4 * DIM], f"= {rows - 1} rows of {DIM} float32, expected {rows} rows")  # a row short
    refused(good + good[: 4 * DIM], f"= {rows + 1} rows of {DIM} float32, expected {rows} rows")
    refused(good[: len(good) // 2], f"expected {rows} rows")  # the width of another index (d = 8)
    refused(None, "no such file")
    assert not codes_path(toy, "bad").exists()
    arguments = ["encode", "toy", "--import-codes", str(source["index"]), "--unisrec-dir", str(source["dir"])]
    (tmp_path / "bad.feat").write_bytes(good + b"abc")
    result = CliRunner().invoke(app, [*arguments, "--features", str(tmp_path / "bad.feat")])
    assert result.exit_code == 1 and result.output.startswith("error:") and result.output.count("\n") == 1
    alone = CliRunner().invoke(app, ["encode", "toy", "--features", str(tmp_path / "bad.feat")])
    assert alone.exit_code == 1 and "--features is for --import-codes" in alone.output


def test_cli_imports_with_features_and_vqrec_takes_those_codes(source: dict, toy: Dataset) -> None:
    from recbench.runs.experiment import build_method

    features = source["feat_dir"] / "Toy.feat1CLS"
    arguments = ["encode", "toy", "--import-codes", str(source["index"]), "--unisrec-dir", str(source["dir"])]
    result = CliRunner().invoke(app, [*arguments, "--features", str(features), "--codes-name", "all", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["coded_by"] == CODED_BY_VECTORS and report["features"] == str(features.resolve())
    assert (report["items_with_code"], report["items_without_code"]) == (STRICT + COLD, 0)
    assert (report["strict_rows"], report["strict_rows_equal"]) == (STRICT, STRICT)
    result = CliRunner().invoke(app, [*arguments, "--features", str(features), "--codes-name", "all"])
    assert result.exit_code == 0, result.output
    assert "every item's vector encoded by the index, as the official fine-tuning does" in result.output
    assert f"{STRICT + COLD} of {STRICT + COLD} items coded" in result.output
    assert f"check: {STRICT} of the index's {STRICT} stored rows equal" in result.output
    assert "have no code" not in result.output and "WARNING" not in result.output
    entry = get_method("vqrec")
    config = resolve_config(entry, {**VQREC, "item_codes": "imported:all", "missing_codes": "random"})
    model = build_method(entry, config, toy)
    tokens = list(toy.item_ids)
    expected = offset_codes(torch.from_numpy(own_codes(source, tokens)), 2**BITS)
    assert torch.equal(model.codes[1:], expected) and not model.codes[0].any()  # no fallback: every item its own

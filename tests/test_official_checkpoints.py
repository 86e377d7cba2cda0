"""Official UniSRec / VQ-Rec checkpoints: read without running them, mapped parameter by parameter, --init.

The checkpoints here are written by the tests in the authors' layout (RecBole's
``save_pretrained_model``: config object, epoch, state_dict with the official parameter names,
optimizer state, other_parameter), with the official names spelled out by hand below, independently
of the plugins' maps.
"""

from __future__ import annotations

import collections
import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from recbench.cli import app
from recbench.method import DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.official import CheckpointError, load_official, read_checkpoint, resolve_init

UNISREC = {"hidden_size": 16, "inner_size": 16, "max_seq_length": 8}
VQREC = {"hidden_size": 16, "inner_size": 16, "code_dim": 4, "code_cap": 8, "max_seq_length": 10}
TEXT = 12


def write_marker(path: str) -> None:
    """What the hostile object's ``__reduce__`` asks the unpickler to call."""
    Path(path).write_text("code from the checkpoint ran")


class Hostile:
    """An object whose unpickling would run ``write_marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (write_marker, (self.marker,))


class RecBoleLikeConfig:
    """Stands for RecBole's Config: an arbitrary object pickled with its __dict__."""

    def __init__(self, marker: Path) -> None:
        self.final_config_dict = {"model": "UniSRec", "dataset": "FHCKM", "device": torch.device("cpu")}
        self.hook = Hostile(marker)


def transformer(state: dict, random, hidden: int, inner: int, layers: int = 2) -> None:
    """RecBole's TransformerEncoder parameter names (``recbole/model/layers.py``)."""
    for i in range(layers):
        block = f"trm_encoder.layer.{i}."
        for name in ("query", "key", "value", "dense"):
            state[f"{block}multi_head_attention.{name}.weight"] = random(hidden, hidden)
            state[f"{block}multi_head_attention.{name}.bias"] = random(hidden)
        state[f"{block}multi_head_attention.LayerNorm.weight"] = random(hidden)
        state[f"{block}multi_head_attention.LayerNorm.bias"] = random(hidden)
        state[f"{block}feed_forward.dense_1.weight"] = random(inner, hidden)
        state[f"{block}feed_forward.dense_1.bias"] = random(inner)
        state[f"{block}feed_forward.dense_2.weight"] = random(hidden, inner)
        state[f"{block}feed_forward.dense_2.bias"] = random(hidden)
        state[f"{block}feed_forward.LayerNorm.weight"] = random(hidden)
        state[f"{block}feed_forward.LayerNorm.bias"] = random(hidden)


def generator(seed: int):
    source = torch.Generator().manual_seed(seed)
    return lambda *shape: torch.randn(*shape, generator=source)


def official_unisrec_state(text: int = TEXT, hidden: int = 16, positions: int = 8, seed: int = 0) -> dict:
    """``UniSRec`` (RUCAIBox/UniSRec ``unisrec.py``) in its pre-training stage: SASRec without item_embedding."""
    random = generator(seed)
    state = collections.OrderedDict()
    state["position_embedding.weight"] = random(positions, hidden)
    transformer(state, random, hidden, 16)
    state["LayerNorm.weight"], state["LayerNorm.bias"] = random(hidden), random(hidden)
    state["moe_adaptor.w_gate"], state["moe_adaptor.w_noise"] = random(text, 8), random(text, 8)
    for k in range(8):
        state[f"moe_adaptor.experts.{k}.bias"] = random(text)
        state[f"moe_adaptor.experts.{k}.lin.weight"] = random(hidden, text)  # nn.Linear: (out, in)
    return state


def official_vqrec_state(seed: int = 0) -> dict:
    """``VQRec`` (RUCAIBox/VQ-Rec ``vqrec.py``): code table, position, transformer, trans_matrix, LayerNorm."""
    random = generator(seed)
    state = collections.OrderedDict()
    state["pq_code_embedding.weight"] = random(4 * 9, 16)
    state["position_embedding.weight"] = random(10, 16)
    transformer(state, random, 16, 16)
    state["trans_matrix"] = random(4, 9, 9)
    state["LayerNorm.weight"], state["LayerNorm.bias"] = random(16), random(16)
    return state


def save_official(path: Path, state: dict, marker: Path | None = None) -> Path:
    """RecBole's ``PretrainTrainer.save_pretrained_model`` layout."""
    optimizer_state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}}, "param_groups": []}
    torch.save(
        {
            "config": RecBoleLikeConfig(marker or path.with_suffix(".marker")),
            "epoch": 299,
            "state_dict": state,
            "optimizer": optimizer_state,
            "other_parameter": {},
        },
        path,
    )
    return path


def build(name: str, **overrides):
    entry = get_method(name)
    settings = VQREC if name == "vqrec" else UNISREC
    config = resolve_config(entry, settings, overrides)
    text = torch.randn(31, TEXT, generator=torch.Generator().manual_seed(1))
    text[0] = 0
    torch.manual_seed(0)
    return entry.cls(config, DataSpec(num_items=30, max_seq_length=config.max_seq_length, item_text_embeddings=text))


# --- (a) nothing in the file runs; the skipped objects are reported ------------------------------
def test_hostile_object_is_skipped_and_reported_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = save_official(tmp_path / "UniSRec-FHCKM-300.pth", official_unisrec_state(), marker)
    checkpoint = read_checkpoint(path)
    assert not marker.exists()
    skipped = {str(s) for s in checkpoint.skipped}
    assert f"{__name__}.RecBoleLikeConfig at ['config']" in skipped
    assert f"{__name__}.write_marker at ['config'].__state__['hook']" in skipped
    assert "torch.device at ['config'].__state__['final_config_dict']['device']" in skipped
    assert checkpoint.epoch == 299 and set(checkpoint.state_dict) == set(official_unisrec_state())
    model = build("unisrec")
    report = load_official(model, checkpoint, str(path))
    assert not marker.exists()
    assert {s.name for s in report.skipped_objects} >= {f"{__name__}.write_marker"}
    # Control: the same file through an unrestricted unpickler does run the hostile call.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code from the checkpoint ran"


def test_placeholders_stay_inert_whatever_the_pickle_calls_on_them(tmp_path: Path) -> None:
    import pickle

    from recbench.runs.official import Placeholder, RestrictedUnpickler

    hostile = Hostile(tmp_path / "m")
    data = pickle.dumps({"a": Sneaky(hostile), "b": hostile}, protocol=4)
    result = RestrictedUnpickler(io.BytesIO(data), lambda *_: torch.empty(0)).load()
    assert isinstance(result["b"], Placeholder) and result["b"].global_name == f"{__name__}.write_marker"
    sneaky = result["a"]  # built by REDUCE, then given state (BUILD), list items and dict items: all only stored
    assert isinstance(sneaky, Placeholder) and sneaky.global_name == f"{__name__}.Sneaky"
    assert sneaky.state == {"s": result["b"]} and sneaky.items == [1, 2, ("k", result["b"])]
    assert not (tmp_path / "m").exists()
    for refused in (b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00K\x01}\x94b.",):  # BUILD on an int
        with pytest.raises(pickle.UnpicklingError):
            RestrictedUnpickler(io.BytesIO(refused), lambda *_: torch.empty(0)).load()


class Sneaky:
    """Reconstructed with a callable, state, list items and dict items (``__reduce__``'s five parts)."""

    def __init__(self, payload: Hostile) -> None:
        self.payload = payload

    def __reduce__(self):
        return (Sneaky, (self.payload,), {"s": self.payload}, iter([1, 2]), iter([("k", self.payload)]))


# --- (b) every mapped tensor equals its official source -----------------------------------------
def test_unisrec_parameters_equal_their_official_sources(tmp_path: Path) -> None:
    state = official_unisrec_state()
    model = build("unisrec-id")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_official(model, read_checkpoint(save_official(tmp_path / "u.pth", state)), "u.pth")
    own = model.state_dict()
    for k in range(8):
        assert torch.equal(own["adaptor.weight"][k], state[f"moe_adaptor.experts.{k}.lin.weight"].T)
        assert torch.equal(own["adaptor.bias"][k], state[f"moe_adaptor.experts.{k}.bias"])
    assert torch.equal(own["adaptor.gate"], state["moe_adaptor.w_gate"])
    assert torch.equal(own["adaptor.noise"], state["moe_adaptor.w_noise"])
    assert_common_parts_equal(own, state)
    # The ID table (unisrec-id) is not in the checkpoint: it keeps its initial value and is reported.
    assert torch.equal(own["id_embedding.weight"], before["id_embedding.weight"])
    assert report.not_loaded == ["id_embedding.weight"] and report.unmapped == {}
    assert len(report.loaded) == len(own) - 1
    # Loaded through load_pretrained: position embedding and transformer frozen, as official fix_enc.
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n in own if n.startswith(("encoder.", "position_embedding."))}


def test_vqrec_parameters_equal_their_official_sources_and_the_codes_stay_the_targets(tmp_path: Path) -> None:
    state = official_vqrec_state()
    state["item_embedding.weight"] = torch.randn(99, 16)  # an ID table of pre-training items: never loaded
    model = build("vqrec")
    codes = model.codes.clone()
    report = load_official(model, read_checkpoint(save_official(tmp_path / "v.pth", state)), "v.pth")
    own = model.state_dict()
    assert torch.equal(own["code_embedding.weight"], state["pq_code_embedding.weight"])
    assert torch.equal(own["trans_matrix"], state["trans_matrix"])
    assert_common_parts_equal(own, state)
    assert torch.equal(model.codes, codes)
    assert report.not_loaded == [] and list(report.unmapped) == ["item_embedding.weight"]
    assert "pre-training items" in report.unmapped["item_embedding.weight"]
    assert any("item_embedding.weight" in line for line in report.warnings())


def assert_common_parts_equal(own: dict, state: dict) -> None:
    """The SASRec body both models share: LayerNorm, then the parts fine-tuning freezes."""
    assert torch.equal(own["norm.weight"], state["LayerNorm.weight"])
    assert torch.equal(own["norm.bias"], state["LayerNorm.bias"])
    assert_frozen_parts_equal(own, state)


def assert_frozen_parts_equal(own: dict, state: dict) -> None:
    """Position embedding and transformer (frozen by fine-tuning from a checkpoint)."""
    assert torch.equal(own["position_embedding.weight"], state["position_embedding.weight"])
    for i in range(2):
        for name in ("query", "key", "value", "dense"):
            for kind in ("weight", "bias"):
                official = state[f"trm_encoder.layer.{i}.multi_head_attention.{name}.{kind}"]
                assert torch.equal(own[f"encoder.attention.{i}.{name}.{kind}"], official)
        for kind in ("weight", "bias"):
            norm = state[f"trm_encoder.layer.{i}.multi_head_attention.LayerNorm.{kind}"]
            assert torch.equal(own[f"encoder.attention.{i}.norm.{kind}"], norm)
            for name in ("dense_1", "dense_2"):
                official = state[f"trm_encoder.layer.{i}.feed_forward.{name}.{kind}"]
                assert torch.equal(own[f"encoder.feed_forward.{i}.{name}.{kind}"], official)
            norm = state[f"trm_encoder.layer.{i}.feed_forward.LayerNorm.{kind}"]
            assert torch.equal(own[f"encoder.feed_forward.{i}.norm.{kind}"], norm)


# --- (c) recbench train --init starts fine-tuning from those weights ------------------------------
def test_train_with_init_starts_from_the_official_weights(recbench_home: Path, tmp_path: Path) -> None:
    from recbench.data.dataset import save_dataset
    from tests.conftest import make_cyclic_dataset

    save_dataset(make_cyclic_dataset("target", items=20, seed=2))
    marker = tmp_path / "marker"
    state = official_unisrec_state(text=384)  # the default encoder (all-MiniLM-L6-v2) is 384-d
    (recbench_home / "official").mkdir(parents=True)
    save_official(recbench_home / "official" / "UniSRec-FHCKM-300.pth", state, marker)
    runner = CliRunner()
    common = ["train", "unisrec", "--dataset", "target", "--device", "cpu", "--runs-dir", str(tmp_path / "runs")]
    settings = [f"--set={key}={value}" for key, value in UNISREC.items()]

    def run(*extra: str) -> Path:
        result = runner.invoke(app, [*common, *settings, *extra])
        assert result.exit_code == 0, result.output
        return Path(json.loads(result.stdout[result.stdout.index("{") :])["run"])

    # epochs = 0: the run's weights are exactly the loaded ones (the state fine-tuning starts from).
    start = run("--set=epochs=0", "--init", "official:UniSRec-FHCKM-300", "--json")
    weights = torch.load(start / "best.pt", weights_only=True)
    assert_common_parts_equal(weights, state)
    for k in range(8):
        assert torch.equal(weights["adaptor.weight"][k], state[f"moe_adaptor.experts.{k}.lin.weight"].T)
    record = json.loads((start / "config.json").read_text())
    path = recbench_home / "official" / "UniSRec-FHCKM-300.pth"
    assert record["init"]["sha256"] == read_checkpoint(path).sha256
    assert record["init"]["not_loaded"] == [] and record["init"]["unmapped"] == {}
    assert {s["name"] for s in record["init"]["skipped_objects"]} >= {f"{__name__}.write_marker"}
    assert not marker.exists()
    # One epoch of fine-tuning: the frozen parts still equal the checkpoint's, the adaptor moved.
    tuned = torch.load(run("--set=epochs=1", "--init", str(path), "--json") / "best.pt", weights_only=True)
    assert_frozen_parts_equal(tuned, state)
    assert not torch.equal(tuned["adaptor.gate"], state["moe_adaptor.w_gate"])
    # The file's digest is part of the run's identity: other weights, another run; no --init, another run.
    plain = run("--set=epochs=0", "--json")
    assert plain != start and "init" not in json.loads((plain / "config.json").read_text())


# --- (d) clear errors ------------------------------------------------------------------------------
def test_shape_mismatch_names_the_parameter_and_both_shapes(tmp_path: Path) -> None:
    path = save_official(tmp_path / "u.pth", official_unisrec_state(text=768))
    with pytest.raises(CheckpointError) as caught:
        load_official(build("unisrec"), read_checkpoint(path), str(path))
    message = str(caught.value)
    assert "official 'moe_adaptor.w_gate' has shape (768, 8)" in message
    assert "recbench's 'adaptor.gate' has shape (12, 8)" in message and "bert-base-uncased" in message
    state = official_unisrec_state()
    state["trm_encoder.layer.1.feed_forward.dense_1.weight"] = torch.zeros(32, 16)
    path = save_official(tmp_path / "w.pth", state)
    with pytest.raises(
        CheckpointError, match=r"'trm_encoder.layer.1.feed_forward.dense_1.weight' has shape \(32, 16\)"
    ):
        load_official(build("unisrec"), read_checkpoint(path), str(path))


def test_files_that_are_not_checkpoints_are_refused_clearly(tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        read_checkpoint(text)
    whole = save_official(tmp_path / "whole.pth", official_unisrec_state())
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(truncated)
    other_zip = tmp_path / "other.pth"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        read_checkpoint(other_zip)
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy"):
        read_checkpoint(legacy)
    with pytest.raises(CheckpointError, match="none of its"):
        foreign = tmp_path / "foreign.pth"
        torch.save({"state_dict": {"item_embedding.weight": torch.ones(3, 16)}}, foreign)
        load_official(build("unisrec"), read_checkpoint(foreign), str(foreign))


def test_damaged_storage_entry_is_refused(tmp_path: Path) -> None:
    whole = save_official(tmp_path / "whole.pth", official_unisrec_state())
    damaged = tmp_path / "damaged.pth"
    with zipfile.ZipFile(whole) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, data[:-4] if "/data/" in item.filename and item.filename.endswith("/0") else data)
    with pytest.raises(CheckpointError, match="bytes"):
        read_checkpoint(damaged)


def test_official_name_resolves_under_recbench_home(recbench_home: Path) -> None:
    with pytest.raises(CheckpointError, match="put the authors' checkpoint there"):
        resolve_init("official:VQRec-FHCKM-300")
    (recbench_home / "official").mkdir(parents=True)
    (recbench_home / "official" / "VQRec-FHCKM-300.pth").write_bytes(b"x")
    assert resolve_init("official:VQRec-FHCKM-300").name == "VQRec-FHCKM-300.pth"
    with pytest.raises(CheckpointError):
        resolve_init("official:../secrets")


# --- (e) a method without a mapping is refused ------------------------------------------------------
def test_method_without_a_mapping_is_refused(recbench_home: Path, tmp_path: Path) -> None:
    from recbench.data.dataset import save_dataset
    from tests.conftest import make_cyclic_dataset

    save_dataset(make_cyclic_dataset("target", items=20, seed=2))
    path = save_official(tmp_path / "u.pth", official_unisrec_state())
    result = CliRunner().invoke(
        app,
        [
            "train",
            "sasrec",
            "--dataset",
            "target",
            "--device",
            "cpu",
            "--init",
            str(path),
            "--runs-dir",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 1
    assert "error:" in result.output and "no official checkpoint mapping" in result.output
    assert "unisrec" in result.output and "vqrec" in result.output
    assert not (tmp_path / "r").exists()

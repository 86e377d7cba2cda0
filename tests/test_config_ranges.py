"""Config values out of range are refused when the config is built: one ``error:`` line, exit 1, no run.

Every refusal goes through the real command line (``recbench train ... --set key=value``) on a saved
toy dataset, so what is checked is what a user sees. Values that are legitimate at the edge of a
range (dropout 0, epochs 0, an integer learning rate) must still pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from recbench.cli import app
from recbench.compare import QUICK, overrides_for
from recbench.errors import ConfigError
from recbench.registry import get_method, methods, parse_assignments, read_config_file, resolve_config

runner = CliRunner()

# (method, --set assignments, keys the error line must name)
REFUSED: list[tuple[str, list[str], list[str]]] = [
    # shared by every method (MethodConfig)
    ("sasrec", ["hidden_size=-4"], ["hidden_size", "greater than 0", "got -4"]),
    ("sasrec", ["hidden_size=0"], ["hidden_size"]),
    ("sasrec", ["hidden_size=true"], ["hidden_size", "integer", "got true"]),
    ("sasrec", ["hidden_size=64.0"], ["hidden_size", "integer"]),
    ("sasrec", ["hidden_size=sixty"], ["hidden_size", "integer"]),
    ("sasrec", ["learning_rate=-1"], ["learning_rate"]),
    ("sasrec", ["learning_rate=0"], ["learning_rate"]),
    ("sasrec", ["learning_rate=nan"], ["learning_rate", "finite"]),
    ("sasrec", ["learning_rate=inf"], ["learning_rate", "finite"]),
    ("sasrec", ["learning_rate=true"], ["learning_rate", "number"]),
    ("sasrec", ["weight_decay=-0.1"], ["weight_decay"]),
    ("sasrec", ["train_batch_targets=0"], ["train_batch_targets"]),
    ("sasrec", ["bucket_by_length=1"], ["bucket_by_length", "true or false"]),
    ("sasrec", ["epochs=-3"], ["epochs"]),
    ("sasrec", ["patience=-1"], ["patience"]),
    ("sasrec", ["max_seq_length=0"], ["max_seq_length"]),
    ("sasrec", ["clip_grad_norm=0"], ["clip_grad_norm"]),
    ("sasrec", ["clip_grad_norm=nan"], ["clip_grad_norm"]),
    ("sasrec", ["eval_batch_size=0"], ["eval_batch_size"]),
    ("sasrec", ["hidden_size=-4", "epochs=-3"], ["hidden_size", "epochs"]),  # every problem, one line
    ("sasrec", ["hidden_size=[/]"], ["hidden_size", "[/]"]),  # printed as text, not as markup
    # transformer keys (TransformerConfig) and the heads rule
    ("sasrec", ["n_heads=3", "hidden_size=64"], ["n_heads", "hidden_size = 64", "got 3"]),
    ("sasrec", ["n_heads=0"], ["n_heads"]),
    ("sasrec", ["n_layers=0"], ["n_layers"]),
    ("sasrec", ["inner_size=-1"], ["inner_size"]),
    ("sasrec", ["hidden_dropout_prob=2"], ["hidden_dropout_prob"]),
    ("sasrec", ["hidden_dropout_prob=1"], ["hidden_dropout_prob", "less than 1"]),
    ("sasrec", ["attn_dropout_prob=-0.1"], ["attn_dropout_prob"]),
    ("sasrec", ["layer_norm_eps=0"], ["layer_norm_eps"]),
    ("sasrec", ["initializer_range=-0.02"], ["initializer_range"]),
    ("bert4rec", ["n_heads=7"], ["n_heads", "hidden_size = 300"]),
    ("bert4rec", ["mask_ratio=1.5"], ["mask_ratio"]),
    ("bert4rec", ["max_seq_length=4"], ["mask_ratio", "max_seq_length"]),  # int(0.2 * 4) = 0 predicted
    ("bert4rec", ["training_input=all"], ["training_input"]),
    # text and transfer keys (TextMethodConfig, TransferConfig), UniSRec
    ("unisrec", ["text_pooling=max"], ["text_pooling", "'cls' or 'mean'"]),
    ("unisrec", ["text_encoder=''"], ["text_encoder"]),
    ("unisrec", ["text_max_tokens=0"], ["text_max_tokens"]),
    ("unisrec", ["text_precision=float16"], ["text_precision"]),
    ("unisrec", ["pretrain_epochs=-1"], ["pretrain_epochs"]),
    ("unisrec", ["n_heads=3", "hidden_size=64"], ["n_heads", "hidden_size = 64"]),
    ("unisrec", ["n_experts=0"], ["n_experts"]),
    ("unisrec", ["adaptor_dropout_prob=1"], ["adaptor_dropout_prob"]),
    ("unisrec", ["temperature=0"], ["temperature"]),
    ("unisrec", ["seq_seq_weight=-1"], ["seq_seq_weight"]),
    ("unisrec", ["item_drop_ratio=1.5"], ["item_drop_ratio"]),
    ("unisrec", ["item_drop_coefficient=-0.1"], ["item_drop_coefficient"]),
    ("unisrec", ["use_id=1"], ["use_id", "true or false"]),
    # VQ-Rec
    ("vqrec", ["hidden_size=65"], ["n_heads", "hidden_size = 65"]),
    ("vqrec", ["learning_rate=0"], ["learning_rate"]),  # its own learning_rate keeps the range
    ("vqrec", ["code_cap=100"], ["code_cap", "power of two"]),
    ("vqrec", ["code_cap=1"], ["code_cap"]),
    ("vqrec", ["code_dim=0"], ["code_dim"]),
    ("vqrec", ["sinkhorn_iter=0"], ["sinkhorn_iter"]),
    ("vqrec", ["gumbel_temperature=0"], ["gumbel_temperature"]),
    ("vqrec", ["reassign_steps=-1"], ["reassign_steps"]),
    ("vqrec", ["fake_idx_ratio=2"], ["fake_idx_ratio"]),
    ("vqrec", ["pq_seed=-1"], ["pq_seed"]),
    ("vqrec", ["freeze_encoder=0"], ["freeze_encoder"]),
    # IDA-SR and LSH-SR (transformer width: item_size)
    ("idasr", ["n_heads=3"], ["n_heads", "item_size = 256"]),
    ("idasr", ["item_size=0"], ["item_size"]),
    ("idasr", ["semantic_hidden_size=0"], ["semantic_hidden_size"]),
    ("idasr", ["inner_size=0"], ["inner_size"]),  # its own inner_size keeps the range
    ("idasr", ["tasks=['next', 'bogus']"], ["tasks", "item 2", "'next', 'mask' or 'permute'"]),
    ("idasr", ["tasks=[]"], ["tasks", "at least 1"]),
    ("idasr", ["task_weights={next = -1.0}"], ["task_weights", "'next'"]),
    ("idasr", ["task_weights={nxt = 1.0}"], ["task_weights", "'nxt'"]),
    ("idasr", ["mask_ratio=-0.5"], ["mask_ratio"]),
    ("idasr", ["permute_ratio=1.1"], ["permute_ratio"]),
    ("lshsr", ["use_id=false"], ["use_id", "must be true"]),
    ("lshsr", ["item_size=30", "n_heads=4"], ["n_heads", "item_size = 30"]),
    ("lshsr", ["n_hyperplanes=0"], ["n_hyperplanes"]),
    ("lshsr", ["n_hash_tables=0"], ["n_hash_tables"]),
    ("lshsr", ["dnn_layers=0"], ["dnn_layers"]),
    ("lshsr", ["lsh_temperature=0"], ["lsh_temperature"]),
    # AutoMLP
    ("automlp", ["hidden_size=0"], ["hidden_size"]),
    ("automlp", ["channel_hidden_size=-8"], ["channel_hidden_size"]),
    ("automlp", ["long_layers=-1"], ["long_layers"]),
    ("automlp", ["dropout_prob=1"], ["dropout_prob"]),
    ("automlp", ["short_length=0"], ["short_length"]),
    ("automlp", ["short_length=60"], ["short_length", "max_seq_length = 50"]),
    ("automlp", ["short_length_candidates=[64]", "max_seq_length=20"], ["short_length_candidates", "= 20"]),
    ("automlp", ["short_length_candidates=[0, 2]"], ["short_length_candidates", "item 1"]),
    ("automlp", ["short_length_candidates=[]"], ["short_length_candidates"]),
    ("automlp", ["search_steps=0"], ["search_steps"]),
    ("automlp-id", ["search_batch_targets=0"], ["search_batch_targets"]),
    ("automlp", ["loss=bpr"], ["loss"]),
    ("automlp-id", ["negatives=0"], ["negatives"]),
    ("automlp", ["arch_learning_rate=0"], ["arch_learning_rate"]),
    ("automlp", ["arch_weight_decay=-1"], ["arch_weight_decay"]),
    ("automlp", ["unrolled_step=-0.01"], ["unrolled_step"]),
    # IDP
    ("idp", ["zero_shot=true"], ["epochs", "zero_shot"]),
    ("idp-zeroshot", ["epochs=5"], ["epochs", "zero_shot"]),
    ("idp", ["n_heads=7"], ["n_heads", "hidden_size = 300"]),
    ("idp", ["num_similar=0"], ["num_similar"]),
    ("idp", ["matcher_epochs=-1"], ["matcher_epochs"]),
    ("idp", ["matcher_batch_size=1"], ["matcher_batch_size"]),
    ("idp", ["matcher_learning_rate=nan"], ["matcher_learning_rate"]),
    ("idp", ["matcher_temperature=0"], ["matcher_temperature"]),
    ("idp", ["matcher_neighbours=0"], ["matcher_neighbours"]),
    ("idp", ["transfer=bogus"], ["transfer"]),
    ("idp", ["downstream_loss=mse"], ["downstream_loss"]),
    ("idp", ["pretrain_loss=mse"], ["pretrain_loss"]),
]


def train(method: str, runs: Path, *options: str) -> tuple[int, str]:
    """``recbench train METHOD -d toy --runs-dir RUNS OPTIONS...``: exit code and output."""
    result = runner.invoke(app, ["train", method, "-d", "toy", "--runs-dir", str(runs), "--device", "cpu", *options])
    return result.exit_code, result.output


def assert_refused(code: int, output: str, runs: Path, *needles: str) -> str:
    """Exit 1, one ``error:`` line naming every needle, no traceback, nothing written under ``runs``."""
    assert code == 1, output
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error:"), output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not runs.exists() or not any(runs.iterdir()), "a run directory was created"
    return lines[0]


REFUSED_IDS = [f"{method}:{' '.join(assignments)}" for method, assignments, _ in REFUSED]


@pytest.mark.parametrize(("method", "assignments", "needles"), REFUSED, ids=REFUSED_IDS)
def test_an_invalid_value_is_refused_in_one_line(
    method: str, assignments: list[str], needles: list[str], toy_dataset, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    options = [part for assignment in assignments for part in ("--set", assignment)]
    line = assert_refused(*train(method, runs, *options), runs, *needles)
    assert f"of method '{method}'" in line


# --- --config FILE ------------------------------------------------------------------------
CONFIG_FILES: dict[str, tuple[bytes | None, str]] = {
    "missing": (None, "does not exist"),
    "directory": (b"", "is a directory"),
    "binary": (bytes(range(256)), "not UTF-8"),
    "latin-1": ("hidden_size = 64  # café\n".encode("latin-1"), "not UTF-8"),
    "control characters": (b"\x00\x01\x02hidden_size = 64\n", "not valid TOML"),
    "not TOML": (b"hidden_size = = 64\n", "not valid TOML"),
    "a bad value": (b"hidden_size = -4\n", "config key 'hidden_size' of method 'sasrec': must be greater than 0"),
}


@pytest.mark.parametrize("case", list(CONFIG_FILES))
def test_a_bad_config_file_is_refused_in_one_line_naming_it(case: str, toy_dataset, tmp_path: Path) -> None:
    content, expected = CONFIG_FILES[case]
    path = tmp_path / "in" / "settings.toml"
    path.parent.mkdir()
    if case == "directory":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    runs = tmp_path / "runs"
    line = assert_refused(*train("sasrec", runs, "--config", str(path)), runs, expected)
    if case != "a bad value":
        assert str(path) in line


def test_config_file_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        read_config_file(tmp_path)
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="bad.toml is not UTF-8"):
        read_config_file(tmp_path / "bad.toml")


# --- what must still pass -----------------------------------------------------------------
@pytest.mark.parametrize("entry", methods(), ids=lambda entry: entry.name)
def test_every_default_preset_and_quick_preset_validates(entry) -> None:
    config = resolve_config(entry)  # published defaults + the variant preset
    assert type(config) is entry.cls.Config
    resolve_config(entry, *overrides_for(entry.name, [QUICK]))  # --quick, as compare applies it


# (method, --set assignments): values at the edge of a range, written as on the command line
ACCEPTED: list[tuple[str, list[str]]] = [
    ("sasrec", ["learning_rate=1", "weight_decay=0", "epochs=0", "patience=0", "clip_grad_norm=1"]),
    ("sasrec", ["hidden_dropout_prob=0.0", "attn_dropout_prob=0", "hidden_size=1", "n_heads=1", "max_seq_length=1"]),
    ("sasrec", ["hidden_dropout_prob=0.99", "eval_batch_size=1", "train_batch_targets=1", "bucket_by_length=false"]),
    ("bert4rec", ["mask_ratio=0.0", "max_seq_length=4"]),  # no masking, stated explicitly
    ("bert4rec", ["mask_ratio=0.25", "max_seq_length=4"]),  # int(0.25 * 4) = 1 prediction
    ("bert4rec", ["mask_ratio=1", "max_seq_length=1", "n_heads=3", "hidden_size=63"]),
    ("unisrec", ["item_drop_ratio=1.0", "item_drop_coefficient=0", "seq_seq_weight=0", "pretrain_epochs=0"]),
    ("unisrec", ["text_pooling=cls"]),
    ("unisrec", ["adaptor_dropout_prob=0", "temperature=1", "text_precision=bfloat16", "use_id=true"]),
    ("vqrec", ["code_cap=2", "reassign_steps=0", "fake_idx_ratio=1", "pq_seed=0", "learning_rate=1"]),
    ("idasr", ["tasks=['next']", "task_weights={mask = 0}", "mask_ratio=0", "permute_ratio=1", "n_heads=4"]),
    ("lshsr", ["use_id=true", "use_gate=false", "n_hyperplanes=1", "dnn_layers=1"]),
    ("automlp", ["long_layers=0", "short_layers=0", "unrolled_step=0", "arch_weight_decay=0", "dropout_prob=0"]),
    ("automlp", ["short_length=50"]),
    ("automlp-id", ["loss=ce", "negatives=3", "search_steps=1", "search_batch_targets=1"]),
    ("automlp", ["short_length_candidates=[64, 2]", "max_seq_length=20"]),  # 64 is dropped, 2 fits
    ("idp", ["matcher_epochs=0", "matcher_batch_size=2", "zero_shot=true", "epochs=0"]),
    ("idp-zeroshot", ["pretrain_epochs=0"]),
]


@pytest.mark.parametrize(("method", "assignments"), ACCEPTED, ids=[f"{m}:{' '.join(a)}" for m, a in ACCEPTED])
def test_boundary_values_pass(method: str, assignments: list[str]) -> None:
    values = parse_assignments(assignments)
    config = resolve_config(get_method(method), values)
    for key, value in values.items():
        assert getattr(config, key) == value


def test_an_integer_is_a_valid_float_and_stays_a_float() -> None:
    config = resolve_config(get_method("sasrec"), parse_assignments(["learning_rate=1", "hidden_dropout_prob=0"]))
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert isinstance(config.hidden_dropout_prob, float)


def test_a_config_file_with_boundary_values_passes(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text("learning_rate = 1\nepochs = 0\nhidden_dropout_prob = 0.0\nclip_grad_norm = 5\n")
    config = resolve_config(get_method("sasrec"), read_config_file(path))
    assert (config.learning_rate, config.epochs, config.hidden_dropout_prob) == (1.0, 0, 0.0)
    assert config.clip_grad_norm == 5.0 and isinstance(config.clip_grad_norm, float)


def test_a_saved_config_validates_again(tmp_path: Path) -> None:
    # evaluate_run rebuilds a run's config from its config.json: the dumped values must pass strict checks.
    import json

    for entry in methods():
        config = resolve_config(entry, *overrides_for(entry.name, [QUICK]))
        assert resolve_config(entry, json.loads(json.dumps(config.model_dump()))) == config


def test_edge_values_train_through_the_command_line(toy_dataset, tmp_path: Path) -> None:
    sets = ["hidden_size=8", "inner_size=8", "max_seq_length=8", "epochs=0", "learning_rate=1"]
    sets.append("hidden_dropout_prob=0.0")
    code, output = train("sasrec", tmp_path / "runs", *[part for s in sets for part in ("--set", s)])
    assert code == 0, output
    assert next((tmp_path / "runs").rglob("metrics.json"), None) is not None

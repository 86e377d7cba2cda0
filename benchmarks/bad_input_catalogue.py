"""The bad-input catalogue: run recbench's command line on bad input and damaged files, classify each outcome.

Each case builds its state in a fresh temporary home and runs directory, runs one `recbench` command in a
subprocess, and is classified as

- ``clear error``: exit status 1, exactly one ``error:`` line, no traceback (the wanted outcome for bad input);
- ``usage error``: exit status 2, refused while the command line is parsed (a value outside the choices), the
  valid ones named (equally wanted);
- ``works``: exit status 0 where the input is legitimate (e.g. ``epochs=0``);
- ``traceback``: a Python traceback (or a crash without one line);
- ``silently accepted``: exit status 0 on input that must be refused, or numbers that should not exist;
- ``code ran``: a planted pickle was executed; ``wrote outside``: a file appeared outside the home and runs dir.

Run it against any checkout, so a version before and after a change are measured the same way::

    python benchmarks/bad_input_catalogue.py --out ../bench-runs/catalogue-after.md
    python benchmarks/bad_input_catalogue.py --pythonpath ../old-checkout --out ../bench-runs/catalogue-before.md

(``--pythonpath`` puts another checkout's ``recbench`` first on the path; it needs a ``recbench_plugins``
link to its ``plugins/`` folder.) Tiny generated data; about 2-3 s per case on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUL = "\x00"
TINY = {
    "hidden_size": 16,
    "inner_size": 16,
    "max_seq_length": 10,
    "epochs": 2,
    "patience": 1,
    "train_batch_targets": 64,
}


@dataclass
class Case:
    """One catalogue entry: how to damage the state, the command, and whether it must be refused."""

    group: str
    name: str
    args: Callable[[Path], list[str]]
    prepare: Callable[[Path], None] = lambda root: None
    refuse: bool = True


def settings(**changes: object) -> list[str]:
    values = {**TINY, **changes}
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def write_toy_table(path: Path, users: int = 40, items: int = 25) -> None:
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for user in range(users):
        start = int(rng.integers(items))
        for step in range(int(rng.integers(4, 10))):
            lines.append(f"u{user},i{(start + step) % items},{1000 + step}")
    path.write_text("\n".join(lines) + "\n")


def recbench(root: Path, *args: str, python: str, pythonpath: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECBENCH_HOME": str(root / "home"), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [python, "-c", "from recbench.cli import app; app()", *args]
    return subprocess.run(command, cwd=root / "work", env=env, capture_output=True, text=True, timeout=600)


def train_args(root: Path, *extra: str, seed: str = "5") -> list[str]:
    return ["train", "sasrec", "-d", "toy", "--seed", seed, "--device", "cpu", "--runs-dir", str(root / "runs"), *extra]


def the_run(root: Path) -> Path:
    [status] = list((root / "runs").rglob("status.json")) or list((root / "runs").rglob("checkpoint.pt"))
    return status.parent


def cases(python: str, pythonpath: str | None) -> list[Case]:
    def run(root: Path, *args: str) -> None:
        result = recbench(root, *args, python=python, pythonpath=pythonpath)
        if result.returncode != 0:
            raise RuntimeError(f"preparing failed: {' '.join(args)}\n{result.stdout}{result.stderr}")

    def trained(root: Path) -> None:
        run(root, *train_args(root, *settings()))

    def interrupted(root: Path) -> None:
        trained(root)
        (the_run(root) / "status.json").unlink()

    def damage(file: str, content: bytes | str, base: Callable[[Path], None] = trained) -> Callable[[Path], None]:
        def prepare(root: Path) -> None:
            base(root)
            target = the_run(root) / file
            target.write_bytes(content if isinstance(content, bytes) else content.encode())

        return prepare

    def truncate(file: str, base: Callable[[Path], None] = trained) -> Callable[[Path], None]:
        def prepare(root: Path) -> None:
            base(root)
            target = the_run(root) / file
            target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])

        return prepare

    def planted(root: Path) -> None:
        interrupted(root)

        class Planted:
            def __reduce__(self):
                return (os.mkdir, (str(root / "code-ran"),))

        with open(the_run(root) / "checkpoint.pt", "wb") as f:
            pickle.dump({"model": {}, "payload": Planted()}, f)

    def edit_json(file: str, key: str, value: object) -> Callable[[Path], None]:
        def prepare(root: Path) -> None:
            trained(root)
            target = the_run(root) / file
            record = json.loads(target.read_text())
            record[key] = value
            target.write_text(json.dumps(record))

        return prepare

    def ranks(values: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
        def prepare(root: Path) -> None:
            trained(root)
            target = the_run(root) / "ranks.npz"
            with np.load(target) as arrays:
                splits = {k: values(arrays[k]) for k in arrays.files}
            with open(target, "wb") as f:
                np.savez(f, **splits)

        return prepare

    def manifest_name(root: Path) -> None:
        path = root / "home" / "datasets" / "toy" / "manifest.json"
        record = json.loads(path.read_text())
        record["name"] = "../../hijacked"
        path.write_text(json.dumps(record))

    def file_in_work(name: str, content: bytes | str) -> Callable[[Path], None]:
        def prepare(root: Path) -> None:
            target = root / "work" / name
            if content == "<dir>":
                target.mkdir()
            else:
                target.write_bytes(content if isinstance(content, bytes) else content.encode())

        return prepare

    def score_matrix(values: Callable[[int, int], np.ndarray]) -> Callable[[Path], None]:
        def prepare(root: Path) -> None:
            manifest = json.loads((root / "home" / "datasets" / "toy" / "manifest.json").read_text())
            users, items = manifest["counts"]["users"], manifest["counts"]["items"]
            np.save(root / "work" / "scores.npy", values(users, items + 1))

        return prepare

    def unisrec_with_long_id(root: Path) -> None:
        source = root / "work" / "uni"
        source.mkdir()
        (source / "X.item2index").write_text("a\t0\nb\t1\nc\t2\n")
        (source / "X.user2index").write_text("u\t0\n")
        (source / "X.train.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0\t1\n")
        (source / "X.valid.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0 1\t2\n")
        (source / "X.test.inter").write_text(
            "user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0 1 2\t" + "9" * 40 + "\n"
        )

    def lcrec_with_unknown_user(root: Path) -> None:
        source = root / "work" / "lc"
        source.mkdir()
        (source / "X.item2id").write_text("a\t0\nb\t1\nc\t2\n")
        (source / "X.user2id").write_text("u\t0\n")
        (source / "X.inter.json").write_text(json.dumps({"0": [0, 1, 2], "7": [2, 1, 0]}))

    def csv_with_nul(root: Path) -> None:
        rows = [f"u{u},i{i}{NUL if (u, i) == (1, 1) else ''},{i}\n" for u in range(5) for i in range(4)]
        (root / "work" / "nul.csv").write_text("user_id,item_id,timestamp\n" + "".join(rows))

    def runs(root: Path) -> list[str]:
        return ["--runs-dir", str(root / "runs")]

    def ev(root: Path) -> list[str]:
        return ["eval", str(the_run(root)), "--device", "cpu"]

    def resume(root: Path) -> list[str]:
        return train_args(root, "--resume", *settings())

    def imp(file: str, name: str = "ext") -> Callable[[Path], list[str]]:
        return lambda root: ["eval", "--import", file, "--dataset", "toy", "--name", name, *runs(root)]

    return [
        # security and paths
        Case("security", "train --dataset ../../x", lambda r: ["train", "sasrec", "--dataset", "../../x", *runs(r)]),
        Case("security", "encode ../x", lambda r: ["encode", "../x"]),
        Case(
            "security",
            "eval --import --dataset ../x",
            lambda r: ["eval", "--import", "l.tsv", "--dataset", "../x", "--name", "e", *runs(r)],
            file_in_work("l.tsv", "u0\ti1\n"),
        ),
        Case("security", "eval --import --name ../x", imp("l.tsv", "../x"), file_in_work("l.tsv", "u0\ti1\n")),
        Case(
            "security",
            "manifest name ../../hijacked",
            lambda r: train_args(r, *settings()),
            manifest_name,
            refuse=False,
        ),
        Case("security", "planted pickle in checkpoint.pt", resume, planted),
        # config values
        *[
            Case("config", f"--set {k}={v}", lambda r, k=k, v=v: train_args(r, *settings(**{k: v})))
            for k, v in [
                ("hidden_size", -4),
                ("hidden_size", 0),
                ("hidden_size", "true"),
                ("learning_rate", -1),
                ("learning_rate", "nan"),
                ("n_heads", 3),
                ("hidden_dropout_prob", 2),
                ("max_seq_length", 0),
                ("eval_batch_size", 0),
                ("epochs", -3),
                ("patience", -1),
                ("learning_rate", 1e12),
            ]
        ],
        Case(
            "config",
            "--set epochs=0 (legitimate: zero-shot)",
            lambda r: train_args(r, *settings(epochs=0)),
            refuse=False,
        ),
        Case("config", "--seed -1", lambda r: train_args(r, *settings(), seed="-1")),
        Case("config", "--seed 99999999999", lambda r: train_args(r, *settings(), seed="99999999999")),
        Case(
            "config",
            "--config binary file",
            lambda r: train_args(r, "--config", "bin.toml"),
            file_in_work("bin.toml", b"\x00\xff\xfe"),
        ),
        Case("config", "--config directory", lambda r: train_args(r, "--config", "cfg"), file_in_work("cfg", "<dir>")),
        Case("config", "--device tpu", lambda r: train_args(r, *settings(), "--device", "tpu")),
        Case("config", "--device mps", lambda r: train_args(r, *settings(), "--device", "mps")),
        # damaged run files
        Case("run files", "truncated checkpoint.pt (resume)", resume, truncate("checkpoint.pt", interrupted)),
        Case("run files", "empty checkpoint.pt (resume)", resume, damage("checkpoint.pt", b"", interrupted)),
        Case("run files", "truncated best.pt (eval)", ev, truncate("best.pt")),
        Case("run files", "empty best.pt (eval)", ev, damage("best.pt", b"")),
        Case("run files", "truncated ranks.npz (eval)", ev, truncate("ranks.npz")),
        Case("run files", "empty ranks.npz (eval)", ev, damage("ranks.npz", b"")),
        Case("run files", "garbage status.json (eval)", ev, damage("status.json", "{oops")),
        Case("run files", "garbage config.json (eval)", ev, damage("config.json", "{oops")),
        Case("run files", "garbage metrics.json (eval)", ev, damage("metrics.json", "{oops")),
        Case(
            "run files",
            "metrics.json deleted (eval)",
            ev,
            lambda r: (trained(r), (the_run(r) / "metrics.json").unlink()),
        ),
        Case("run files", "rank 0 (eval)", ev, ranks(lambda a: np.where(np.arange(len(a)) == 0, 0, a))),
        Case("run files", "rank > N (eval)", ev, ranks(lambda a: a + 10_000)),
        Case("run files", "NaN ranks (eval)", ev, ranks(lambda a: np.full(len(a), np.nan))),
        Case("run files", "edited dataset field (eval)", ev, edit_json("config.json", "dataset", "other")),
        Case("run files", "edited test metric (eval)", ev, edit_json("metrics.json", "test", {"ndcg@10": 1.0})),
        Case(
            "datasets",
            "garbage manifest.json (list datasets)",
            lambda r: ["list", "datasets"],
            lambda r: (r / "home" / "datasets" / "toy" / "manifest.json").write_text("{oops"),
            refuse=False,
        ),
        Case(
            "datasets",
            "truncated users.txt (train)",
            lambda r: train_args(r, *settings()),
            lambda r: (r / "home" / "datasets" / "toy" / "users.txt").write_text("u0\nu1\n"),
        ),
        Case(
            "datasets",
            "empty sequences.npz (train)",
            lambda r: train_args(r, *settings()),
            lambda r: (r / "home" / "datasets" / "toy" / "sequences.npz").write_bytes(b""),
        ),
        # imports
        Case(
            "imports",
            "40-digit id in a UniSRec file",
            lambda r: ["download", "uni40", "--from", "uni", "--input-format", "unisrec"],
            unisrec_with_long_id,
        ),
        Case(
            "imports",
            "LC-Rec user key not in user2id",
            lambda r: ["download", "lc", "--from", "lc", "--input-format", "lcrec"],
            lcrec_with_unknown_user,
        ),
        Case("imports", "NUL byte in a CSV", lambda r: ["download", "nul", "--from", "nul.csv"], csv_with_nul),
        Case("imports", ".npz to eval --import", imp("x.npz"), file_in_work("x.npz", b"PK\x03\x04junk")),
        Case("imports", "directory to eval --import", imp("d"), file_in_work("d", "<dir>")),
        Case("imports", "empty .npy to eval --import", imp("e.npy"), file_in_work("e.npy", b"")),
        Case("imports", "all-NaN score matrix", imp("scores.npy"), score_matrix(lambda u, n: np.full((u, n), np.nan))),
        Case(
            "imports",
            "complex score matrix",
            imp("scores.npy"),
            score_matrix(lambda u, n: np.ones((u, n), dtype=complex)),
        ),
        Case(
            "imports",
            "all ranked lists empty",
            imp("empty.tsv"),
            lambda r: (r / "work" / "empty.tsv").write_text("".join(f"u{u}\n" for u in range(40))),
        ),
    ]


def classify(case: Case, result: subprocess.CompletedProcess, root: Path, before: set[Path]) -> str:
    output = result.stdout + result.stderr
    outside = {p for p in root.parent.glob("*") if p not in before}
    if (root / "code-ran").exists():
        return "code ran"
    if outside or (root / "hijacked").exists() or (root.parent / "hijacked").exists():
        return "wrote outside"
    if "Traceback" not in output and result.returncode == 2 and "Usage:" in output:
        return "usage error"  # refused while parsing the command line, naming the valid choices
    if "Traceback" in output or result.returncode not in (0, 1):
        return "traceback"
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    if result.returncode == 1:
        return "clear error" if len(errors) == 1 else "unclear error"
    return "works" if not case.refuse else "silently accepted"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="Python that runs recbench")
    parser.add_argument(
        "--pythonpath", default=None, help="put this checkout first on the path (measure another version)"
    )
    parser.add_argument("--out", type=Path, required=True, help="markdown report to write")
    parser.add_argument("--only", default=None, help="run only the cases whose name contains this text")
    options = parser.parse_args()
    rows, counts = [], collections.Counter()
    selected = [c for c in cases(options.python, options.pythonpath) if not options.only or options.only in c.name]
    started = time.perf_counter()
    for number, case in enumerate(selected, 1):
        with tempfile.TemporaryDirectory() as scratch:
            base = Path(scratch) / "sandbox"
            root = base / "case"
            (root / "work").mkdir(parents=True)
            write_toy_table(root / "work" / "toy.csv")
            result = recbench(
                root, "download", "toy", "--from", "toy.csv", python=options.python, pythonpath=options.pythonpath
            )
            if result.returncode != 0:
                raise SystemExit(f"could not import the toy data:\n{result.stdout}{result.stderr}")
            (root / "work" / "toy.csv").unlink()
            try:
                case.prepare(root)
            except Exception as err:
                rows.append((case, "could not prepare", str(err).splitlines()[0][:120]))
                counts["could not prepare"] += 1
                continue
            before = set(base.glob("*"))
            result = recbench(root, *case.args(root), python=options.python, pythonpath=options.pythonpath)
            outcome = classify(case, result, root, before)
            lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
            last = lines[-1][:140] if lines else ""
            rows.append((case, outcome, last))
            counts[outcome] += 1
            print(f"[{number}/{len(selected)}] {case.group}: {case.name}: {outcome}", flush=True)
            shutil.rmtree(base, ignore_errors=True)
    table = ["| group | case | outcome | last line |", "|---|---|---|---|"]
    table += [f"| {c.group} | {c.name} | {o} | `{last.replace('|', '/').replace('`', '')}` |" for c, o, last in rows]
    summary = ", ".join(f"{n} {k}" for k, n in counts.most_common())
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(
        f"# Bad-input catalogue\n\n{len(rows)} cases in {time.perf_counter() - started:.0f} s: {summary}.\n\n"
        + "\n".join(table)
        + "\n"
    )
    print(f"{len(rows)} cases: {summary}; wrote {options.out}")


if __name__ == "__main__":
    main()

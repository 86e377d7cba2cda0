"""Ingest speed and peak memory: each import in a fresh process (peak RSS is per process).

Real files (not in the project; defaults point at ../shared/data) and, for the raw Amazon path,
a generated ratings CSV + meta file of the size of the real Scientific raw files (1,758,333
ratings, ~168k meta records; generated, not real data).

    python benchmarks/ingest_speed.py                      # every case
    python benchmarks/ingest_speed.py --raw-lines 5000000  # a bigger generated raw file
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = {
    "scientific (unisrec)": ("scientific", DATA / "amazon2018-unisrec" / "Scientific"),
    "instruments (lcrec)": ("instruments-lcrec", DATA / "amazon2018-lcrec" / "Instruments"),
    "arts (lcrec, ID-only)": ("arts-mql4grec", DATA / "amazon2018-mql4grec" / "Arts"),
    "ml-100k (recbole)": ("ml-100k", DATA / "movielens-100k-recbole"),
}

CHILD = r"""
import json, re, sys, time
from pathlib import Path
from recbench.data.download import import_local
started = time.perf_counter()
result = import_local(sys.argv[1], Path(sys.argv[2]))
seconds = time.perf_counter() - started
# VmHWM: this process's peak RSS (ru_maxrss would include the parent's RSS inherited at fork).
peak = int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())[1]) / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak, "counts": list(vars(result.dataset.counts).values())}))
"""


def generate_raw(directory: Path, lines: int, seed: int = 0) -> Path:
    """A synthetic ratings CSV and meta file shaped like Amazon 2018 (power-law users and items)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    per_user = np.minimum(rng.zipf(3.0, lines), 500)  # mean ~1.4 ratings per user, as in Amazon 2018
    users = np.repeat(np.arange(lines), per_user)[:lines]
    n_items = max(1000, lines // 10)
    popularity = 1.0 / (np.arange(n_items) + 10.0) ** 0.9
    items = rng.choice(n_items, lines, p=popularity / popularity.sum())
    frame = pd.DataFrame(
        {
            "item": [f"B{i:09d}" for i in items],
            "user": [f"A{u:013X}" for u in users],
            "rating": rng.choice(["5.0", "4.0", "3.0", "2.0", "1.0"], lines),
            "time": 1_300_000_000 + rng.integers(0, 200_000, lines) * 3600,
        }
    )
    directory.mkdir(parents=True, exist_ok=True)
    frame.to_csv(directory / "Generated.csv", header=False, index=False)
    with gzip.open(directory / "meta_Generated.json.gz", "wt", encoding="utf-8", compresslevel=6) as f:
        for i in range(int(n_items * 0.95)):
            record = {
                "category": ["Industrial &amp; Scientific", "Lab", f"Kind {i % 50}"],
                "title": f"Product {i} " + "word " * 40,
                "brand": f"Brand {i % 300}",
                "asin": f"B{i:09d}",
            }
            f.write(json.dumps(record) + "\n")
    return directory


def run(name: str, source: Path, home: Path) -> dict:
    env = {**os.environ, "RECBENCH_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(source)], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--raw-lines", type=int, default=1_758_333, help="ratings lines of the generated raw file (0: skip)"
    )
    args = parser.parse_args()
    baseline = "import recbench.data.download, recbench.data.amazon, recbench.data.tables"
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        peak = 're.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1]'
        import_only = subprocess.run(
            [sys.executable, "-c", f"{baseline}; import re; print(int({peak}) / 1024)"],
            check=True,
            capture_output=True,
            text=True,
        )
        print(f"{'case':34} {'seconds':>8} {'peak MiB':>9}  users / items / interactions")
        print(f"{'(imports only)':34} {'':>8} {float(import_only.stdout):9.0f}")
        cases = dict(CASES)
        if args.raw_lines:
            cases[f"generated raw Amazon ({args.raw_lines:,} lines)"] = (
                "generated-raw",
                generate_raw(Path(tmp) / "raw", args.raw_lines),
            )
        for label, (name, source) in cases.items():
            if not source.exists():
                print(f"{label:34} missing: {source}")
                continue
            stats = run(name, source, home)
            counts = " / ".join(f"{c:,}" for c in stats["counts"])
            print(f"{label:34} {stats['seconds']:8.2f} {stats['peak_mib']:9.0f}  {counts}")


if __name__ == "__main__":
    main()

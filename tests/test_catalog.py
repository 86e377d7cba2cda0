"""The catalogue: the built-in datasets.toml (repository root, packaged in the wheel) and the user's file over it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recbench.cli import app
from recbench.data.catalog import (
    BUILTIN,
    builtin_catalog_text,
    catalog_origin,
    dataset_names,
    get_dataset_spec,
    get_suite,
)
from recbench.data.filters import InteractionFilter
from recbench.errors import DataError

REPOSITORY = Path(__file__).resolve().parents[1]
runner = CliRunner()


def write_user_catalog(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "datasets.toml"
    path.write_text(text)
    return path


def test_checkout_reads_the_root_file_and_the_package_dir_holds_no_copy() -> None:
    assert (REPOSITORY / "datasets.toml").is_file()
    assert not (REPOSITORY / "recbench" / "data" / "datasets.toml").exists()  # one source of truth
    assert builtin_catalog_text() == (REPOSITORY / "datasets.toml").read_text(encoding="utf-8")


def test_user_entries_override_and_extend_the_builtin_catalogue(recbench_home: Path) -> None:
    path = write_user_catalog(
        recbench_home,
        """
[datasets.scientific]  # replaces the built-in entry whole
family = "amazon2018"
full_name = "Industrial_and_Scientific"
expected = { users = 1, items = 2, interactions = 3 }

[datasets.beauty2018]  # a new category of a built-in family
family = "amazon2018"
full_name = "All_Beauty"
filter = { min_user_interactions = 5, min_item_interactions = 5 }

[suites.mine]
sources = ["food"]
targets = ["beauty2018"]
""",
    )
    scientific = get_dataset_spec("scientific")
    assert scientific.expected is not None and scientific.expected.users == 1 and scientific.origin == str(path)
    beauty = get_dataset_spec("beauty2018")
    assert beauty.raw_files["ratings"]["file"] == "All_Beauty.csv" and beauty.origin == str(path)
    assert beauty.interaction_filter == InteractionFilter(5, 5, "kcore")
    assert get_dataset_spec("arts").origin == BUILTIN and catalog_origin("suites", "mine") == str(path)
    assert get_suite("mine").targets == ("beauty2018",) and "beauty2018" in dataset_names()

    path.unlink()  # the catalogue follows the file: gone, the built-in entry is back
    assert get_dataset_spec("scientific").origin == BUILTIN and "beauty2018" not in dataset_names()


def test_list_datasets_shows_where_each_entry_comes_from(recbench_home: Path) -> None:
    path = write_user_catalog(recbench_home, '[datasets.mine]\nfamily = "amazon2018"\nfull_name = "All_Beauty"\n')
    result = runner.invoke(app, ["list", "datasets"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.startswith("│")}
    assert "│ user file " in rows["mine"] and "│ built-in " in rows["arts"]
    assert f"entries marked 'user file' come from {path}" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[datasets.mine]\nfamily = "amazon2018"\nfull_name = All_Beauty\n', r"datasets\.toml:3: not valid TOML \("),
        ('[datasets.mine]\nfamily = "nope"\n', r"datasets\.toml: \[datasets\.mine\] names family 'nope'"),
        ("[dataset.mine]\nfamily = 'amazon2018'\n", r"datasets\.toml: unknown table\(s\) dataset"),
        (
            "[datasets.mine]\nfamily = 'amazon2018'\nexpected = { users = 1 }\n",
            r"\[datasets\.mine\] expected: expected \{ users = N",
        ),
        (
            "[datasets.mine]\nfamily = 'amazon2018'\nfilter = { min_user_interactions = 0 }\n",
            r"\[datasets\.mine\] filter \(entry\): min_user_interactions must be a whole number of at least 1",
        ),
    ],
)
def test_a_bad_user_catalogue_is_a_one_line_error_naming_the_file(recbench_home: Path, text: str, message: str) -> None:
    path = write_user_catalog(recbench_home, text)
    with pytest.raises(DataError, match=message) as err:
        get_dataset_spec("arts")
    assert str(err.value).startswith(str(path))
    result = runner.invoke(app, ["list", "datasets"], env={"COLUMNS": "400"})
    assert result.exit_code == 1 and result.output.startswith(f"error: {path}") and result.output.count("\n") == 1


def test_builtin_catalogue_entries_are_all_valid() -> None:
    for name in dataset_names():
        spec = get_dataset_spec(name)
        assert spec.origin == BUILTIN
        if not spec.synthetic:
            assert spec.raw_files, name
            assert all(info["urls"] for info in spec.raw_files.values()), name


def test_the_wheel_ships_the_catalogue_and_the_installed_package_reads_it(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", minversion="77")  # the build backend pyproject.toml asks for
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "datasets.toml"):
        shutil.copy2(REPOSITORY / name, source / name)
    for package in ("recbench", "plugins"):
        shutil.copytree(REPOSITORY / package, source / package, ignore=ignore)
    build = "from setuptools import build_meta; print(build_meta.build_wheel({out!r}))"
    subprocess.run(
        [sys.executable, "-c", build.format(out=str(tmp_path / "dist"))],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("recbench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("recbench/data/datasets.toml") == (REPOSITORY / "datasets.toml").read_bytes()
        archive.extractall(tmp_path / "site")
    probe = (
        "import recbench.data.catalog as c; "
        "print(c.__file__); print(len(c.dataset_names())); print(c.get_dataset_spec('scientific').full_name)"
    )
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "RECBENCH_HOME": str(tmp_path / "home")}
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=environment, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert found[0].startswith(str(tmp_path / "site"))  # the installed copy, not this checkout
    assert int(found[1]) == len(dataset_names()) and found[2] == "Industrial_and_Scientific"

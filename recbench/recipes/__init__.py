"""Paper recipes: one TOML file per published table, run by ``recbench compare --recipe NAME``.

A recipe names the datasets (and pre-training sources), the rows (a registered method, the paper's
label, the row's config settings), the protocol, metrics and seeds, and the numbers the paper
printed. Running it is one :func:`recbench.compare.compare` grid; its report shows each row's
published numbers under the measured ones, with the difference in %. Running it again reuses the
finished runs, so the same command is also the recipe's leaderboard.

Recipes ship in this package (``recbench/recipes/*.toml``); a user's own go in
``$RECBENCH_HOME/recipes/NAME.toml``, or are given by path. The schema is :class:`Recipe`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

from recbench.errors import RecbenchError, UnknownNameError
from recbench.names import check_name


class RecipeRow(BaseModel):
    """One row of a published table: the paper's label, the recbench method that runs it, its settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    method: str
    settings: dict[str, Any] = Field(default_factory=dict)
    dataset_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """dataset -> settings for that dataset only, over ``settings`` (e.g. the README's learning rate per dataset)."""
    published: dict[str, dict[str, float]] = Field(default_factory=dict)
    """dataset -> metric -> the value the paper printed (a fraction, not a percentage)."""
    pretrain: bool = True
    """False: this row is trained from scratch even though the recipe pre-trains (a "w/o pre-training" row)."""
    init: str = ""
    """A released checkpoint the row is fine-tuned from (``official:NAME`` or a path, as ``train --init``)
    instead of the recipe's pre-training: the official-artefacts route of a transfer table."""


class Recipe(BaseModel):
    """A published table as recbench runs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    title: str
    source: str
    protocol: str = "full"
    metrics: list[str]
    seeds: Annotated[int, Field(strict=True, ge=1)] = 3
    datasets: list[str]
    pretrain_on: list[str] = Field(default_factory=list)
    notes: str = ""
    settings: dict[str, Any] = Field(default_factory=dict)
    """Config settings shared by the rows: each row whose method has a key gets it (a key no row's
    method has is an error), beneath ``--quick`` and ``--set``; a row's own ``settings`` still win.
    E.g. the pre-training budget (``pretrain_epochs``), which a user may then raise with ``--set``."""
    stand_ins: dict[str, str] = Field(default_factory=dict)
    """dataset -> a dataset that can stand in for it where the original cannot be had (say why in notes)."""
    rows: list[RecipeRow]

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        from recbench.results.stats import parse_metric

        for metric in self.metrics:
            parse_metric(metric)
        labels = [row.label for row in self.rows]
        if not labels:
            raise ValueError("a recipe needs at least one row")
        if len(set(labels)) < len(labels):
            raise ValueError(f"two rows share the label {next(x for x in labels if labels.count(x) > 1)!r}")
        for row in self.rows:
            stray = set(row.dataset_settings) - set(self.datasets)
            if stray:
                raise ValueError(f"row {row.label!r} has dataset_settings for {sorted(stray)}, not among its datasets")
            for dataset, numbers in row.published.items():
                if dataset not in self.datasets:
                    raise ValueError(f"row {row.label!r} publishes numbers for {dataset!r}, not one of its datasets")
                unknown = set(numbers) - set(self.metrics)
                if unknown:
                    raise ValueError(f"row {row.label!r} on {dataset!r}: metrics {sorted(unknown)} are not in metrics")
                if not all(0.0 <= v <= 1.0 for v in numbers.values()):
                    raise ValueError(f"row {row.label!r} on {dataset!r}: published values are fractions in [0, 1]")
        unknown_stand_ins = set(self.stand_ins) - set(self.datasets)
        if unknown_stand_ins:
            raise ValueError(f"stand_ins for datasets the recipe does not use: {sorted(unknown_stand_ins)}")
        return self


def _builtin_files() -> dict[str, Any]:
    return {
        entry.name.removesuffix(".toml"): entry
        for entry in resources.files(__name__).iterdir()
        if entry.name.endswith(".toml")
    }


def user_recipes_dir() -> Path:
    from recbench.data.catalog import recbench_home

    return recbench_home() / "recipes"


def recipe_names() -> dict[str, str]:
    """Every recipe name -> where it comes from ("built in" or the user's file)."""
    names = {name: "built in" for name in sorted(_builtin_files())}
    folder = user_recipes_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.toml")):
            names.setdefault(path.stem, str(path))
    return names


def parse_recipe(text: str, name: str, where: str) -> Recipe:
    """A recipe from TOML text; errors name the file and the field."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RecbenchError(f"{where}: not valid TOML ({err})") from None
    try:
        return Recipe(name=name, **table)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'recipe'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise RecbenchError(f"{where}: {problems}") from None
    except TypeError as err:
        raise RecbenchError(f"{where}: {err}") from None


def get_recipe(name_or_path: str) -> Recipe:
    """A built-in recipe, one of ``$RECBENCH_HOME/recipes/``, or a ``.toml`` file given by path."""
    if name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_file():
            raise RecbenchError(f"recipe file {path} does not exist")
        return parse_recipe(path.read_text(encoding="utf-8"), path.stem, str(path))
    builtin = _builtin_files()
    if name_or_path in builtin:
        return parse_recipe(builtin[name_or_path].read_text(encoding="utf-8"), name_or_path, f"recipe {name_or_path}")
    check_name("recipe", name_or_path)
    path = user_recipes_dir() / f"{name_or_path}.toml"
    if path.is_file():
        return parse_recipe(path.read_text(encoding="utf-8"), name_or_path, str(path))
    raise UnknownNameError("recipe", name_or_path, recipe_names(), " (or give a path to a .toml file)")


def run_recipe(
    name: str,
    runs_dir: Path | str = "runs",
    use: Mapping[str, str] | None = None,
    stand_ins: bool = False,
    seeds: int | None = None,
    out: str | None = None,
    formats: Sequence[str] | None = None,
    **grid: Any,
) -> tuple[Any, list[Any]]:
    """Run a recipe's grid (reusing finished runs) and return its report with the published numbers.

    ``use`` maps a recipe dataset to the dataset run in its place (``{"instruments":
    "instruments-lcrec"}``); ``stand_ins`` applies the recipe's own ``stand_ins`` beneath it. The
    caption says which data stood in. ``seeds`` overrides the recipe's. The other keyword
    arguments go to :func:`recbench.compare.compare` (jobs, executor, device, quick, live, ...).
    """
    from recbench.compare import MethodRow, compare
    from recbench.results.leaderboard import output_files, write_report

    recipe = get_recipe(name)
    if out is not None:
        output_files(out, formats)  # a bad --out / --format pair fails before anything runs
    use = {**(recipe.stand_ins if stand_ins else {}), **(use or {})}
    unknown = set(use) - set(recipe.datasets) - set(recipe.pretrain_on)
    if unknown:
        raise RecbenchError(
            f"--use names datasets recipe {recipe.name} does not use: {', '.join(sorted(unknown))} "
            f"(its datasets: {', '.join(recipe.datasets)})"
        )
    datasets = [use.get(d, d) for d in recipe.datasets]
    if len(set(datasets)) < len(datasets):
        raise RecbenchError("--use maps two of the recipe's datasets to one dataset")
    rows = [
        MethodRow(
            row.label,
            row.method,
            dict(row.settings),
            row.pretrain,
            row.init,
            {use.get(d, d): dict(settings) for d, settings in row.dataset_settings.items()},
        )
        for row in recipe.rows
    ]
    report, outcomes = compare(
        datasets,
        rows,
        seeds=seeds or recipe.seeds,
        runs_dir=runs_dir,
        metrics=recipe.metrics,
        pretrain_on=[use.get(d, d) for d in recipe.pretrain_on] or None,
        protocols=[recipe.protocol],
        defaults=[recipe.settings] if recipe.settings else None,
        **grid,
    )
    attach_published(report, recipe, use)
    if out is not None:
        write_report(report, out, formats)
    return report, outcomes


def attach_published(report: Any, recipe: Recipe, use: Mapping[str, str]) -> None:
    """Put the recipe's published numbers and notes into ``report`` (datasets renamed by ``use``)."""
    report.reference = f"{recipe.source} (recipe {recipe.name})"
    for dataset in recipe.datasets:
        shown = use.get(dataset, dataset)
        numbers = {row.label: dict(row.published[dataset]) for row in recipe.rows if dataset in row.published}
        if numbers:
            report.published[shown] = numbers
        notes = []
        if shown != dataset:
            notes.append(f"{shown} stands in for the paper's {dataset}: the published numbers are on other data.")
        sources = [use.get(d, d) for d in recipe.pretrain_on]
        if sources != list(recipe.pretrain_on):
            notes.append(f"Pre-trained on {', '.join(sources)} instead of {', '.join(recipe.pretrain_on)}.")
        if notes:
            report.notes[shown] = " ".join(notes)

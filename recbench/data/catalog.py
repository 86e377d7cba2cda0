"""The dataset catalogue (``datasets.toml``) and where data lives.

Two files make the catalogue:

- the built-in ``datasets.toml``: at the repository root in a checkout, shipped inside the wheel as
  ``recbench/data/datasets.toml`` (``setup.py`` copies it there at build time);
- the user's ``$RECBENCH_HOME/datasets.toml`` (optional), read over it: a ``[datasets.NAME]``,
  ``[families.NAME]``, ``[suites.NAME]`` or ``[releases.NAME]`` table of the user file replaces the
  built-in table of the same name whole (no key-by-key merge, so an entry never mixes two files' values).

``[releases.NAME]`` tables describe authors' releases of preprocessed datasets with their text
features (:mod:`recbench.data.release`, ``recbench download NAME --release R``).

Data lives under ``$RECBENCH_HOME`` (default ``~/.cache/recbench``): ``datasets/<name>/`` holds the
canonical Dataset, ``raw/<name>/`` the downloaded raw files, ``embeddings/`` the text-encoder cache.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

from recbench.data.filters import InteractionFilter
from recbench.errors import DataError, UnknownNameError

BUILTIN = "built-in"
SECTIONS = ("families", "datasets", "suites", "releases")
_SINGULAR = {"families": "family", "datasets": "dataset", "suites": "suite", "releases": "release"}
RAW_ROLES = ("ratings", "meta", "archive")  # raw files a family can name: `<role>_file` and `<role>_urls`
_COUNT_KEYS = ("users", "items", "interactions")


def recbench_home() -> Path:
    """Root of recbench's data cache: ``$RECBENCH_HOME`` or ``~/.cache/recbench``."""
    return Path(os.environ.get("RECBENCH_HOME", Path.home() / ".cache" / "recbench")).expanduser()


def datasets_dir() -> Path:
    """Directory holding one canonical Dataset per sub-directory."""
    return recbench_home() / "datasets"


def raw_dir(name: str) -> Path:
    """Where the raw files of dataset ``name`` are downloaded (with their checksum manifest)."""
    from recbench.names import check_name

    return recbench_home() / "raw" / check_name("dataset", name).lower()


def user_catalog_path() -> Path:
    """The user's catalogue, read over the built-in one when it exists: ``$RECBENCH_HOME/datasets.toml``."""
    return recbench_home() / "datasets.toml"


def builtin_catalog_text() -> str:
    """The built-in ``datasets.toml``: the packaged copy (a wheel), else the checkout's root file."""
    packaged = resources.files("recbench.data").joinpath("datasets.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[2] / "datasets.toml"
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    raise DataError(
        f"recbench's built-in datasets.toml is missing (neither in the package nor at {checkout}); reinstall recbench"
    )


@dataclass(frozen=True)
class Counts:
    """Users / items / interactions of a preprocessed dataset."""

    users: int
    items: int
    interactions: int

    def __str__(self) -> str:
        return f"{self.users:,} / {self.items:,} / {self.interactions:,}"


@dataclass(frozen=True)
class DatasetSpec:
    """One ``[datasets.NAME]`` entry of ``datasets.toml``, with its family's defaults filled in."""

    name: str
    family: str
    full_name: str
    expected: Counts | None
    raw_files: dict[str, dict[str, Any]] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    generator: dict[str, Any] = field(default_factory=dict)
    """Parameters of :func:`recbench.data.synthetic.generate` (synthetic family only)."""
    interaction_filter: InteractionFilter | None = None
    """The filter this dataset is defined with (canonical form; None: no filter)."""
    expected_unfiltered: Counts | None = None
    """Counts of the imported interactions before the filter (and before the 3-interaction minimum)."""
    origin: str = BUILTIN
    """Where the entry comes from: ``built-in`` or the path of the user's datasets.toml."""

    @property
    def synthetic(self) -> bool:
        return self.family == "synthetic"


@dataclass(frozen=True)
class Suite:
    """Source domains for pre-training and target domains for evaluation."""

    name: str
    description: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Catalog:
    """The merged catalogue and, for each ``(section, name)``, the file its table comes from."""

    data: dict[str, Any]
    origins: dict[tuple[str, str], str]


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        position = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
        if position:  # tomllib puts the position at the end of its message; lead with it, as file:line
            what = message[: position.start()]
            raise DataError(f"{where}:{position[1]}: not valid TOML ({what}, column {position[2]})") from None
        raise DataError(f"{where}: not valid TOML ({message})") from None


def _merge(builtin: dict[str, Any], user: dict[str, Any] | None, user_path: Path) -> Catalog:
    data: dict[str, Any] = {key: value for key, value in builtin.items() if key not in SECTIONS}
    origins: dict[tuple[str, str], str] = {}
    for section in SECTIONS:
        data[section] = dict(builtin.get(section, {}))
        origins.update({(section, name): BUILTIN for name in data[section]})
    if user is None:
        return Catalog(data, origins)
    unknown = sorted(key for key in user if key not in SECTIONS and key != "format_version")
    if unknown:
        raise DataError(
            f"{user_path}: unknown table(s) {', '.join(unknown)}; a user catalogue holds {', '.join(SECTIONS)}"
        )
    from recbench.names import check_name

    for section in SECTIONS:
        tables = user.get(section, {})
        if not isinstance(tables, dict):
            raise DataError(f"{user_path}: '{section}' must be a table of [{section}.NAME] tables")
        for name, table in tables.items():
            check_name(_SINGULAR[section], name)
            if not isinstance(table, dict):
                raise DataError(f"{user_path}: [{section}.{name}] must be a table")
            data[section][name.lower()] = table
            origins[(section, name.lower())] = str(user_path)
    return Catalog(data, origins)


def _check(catalog: Catalog) -> None:
    """Every dataset entry names a known family and has well-formed counts and filter (errors name the file)."""
    families = catalog.data["families"]
    for name, entry in catalog.data["datasets"].items():
        where = f"{catalog.origins[('datasets', name)]}: [datasets.{name}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("family"), str):
            raise DataError(f'{where} needs family = "..." (one of: {", ".join(sorted(families))})')
        if entry["family"] not in families:
            raise DataError(
                f"{where} names family '{entry['family']}', which no [families.*] table defines "
                f"(known: {', '.join(sorted(families))})"
            )
        for key in ("expected", "expected_unfiltered"):
            if key in entry:
                _counts(entry[key], f"{where} {key}")
        for source, values in (("family", families[entry["family"]].get("filter")), ("entry", entry.get("filter"))):
            if values is not None:
                InteractionFilter.from_mapping(values, f"{where} filter ({source})")


def _counts(values: object, where: str) -> Counts:
    if not isinstance(values, dict) or sorted(values) != sorted(_COUNT_KEYS):
        raise DataError(f"{where}: expected {{ users = N, items = N, interactions = N }}")
    if not all(type(values[k]) is int and values[k] >= 0 for k in _COUNT_KEYS):
        raise DataError(f"{where}: users, items and interactions must be whole numbers >= 0")
    return Counts(**values)


@lru_cache(maxsize=4)
def _load(user_path: str, stamp: tuple[int, int] | None) -> Catalog:
    """The merged catalogue for one state of the user file (``stamp``: its mtime and size, None if absent)."""
    builtin = _parse(builtin_catalog_text(), "built-in datasets.toml")
    path = Path(user_path)
    user = None
    if stamp is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
        user = _parse(text, str(path))
    catalog = _merge(builtin, user, path)
    _check(catalog)
    return catalog


def current_catalog() -> Catalog:
    """The built-in catalogue with the user's ``$RECBENCH_HOME/datasets.toml`` read over it.

    Re-read whenever the user file appears, disappears or changes (its mtime or size).
    """
    path = user_catalog_path()
    try:
        status = path.stat()
        stamp: tuple[int, int] | None = (status.st_mtime_ns, status.st_size)
    except FileNotFoundError:
        stamp = None
    return _load(str(path), stamp)


def load_catalog() -> dict[str, Any]:
    """The merged catalogue as one mapping (``families``, ``datasets``, ``suites``)."""
    return current_catalog().data


def catalog_origin(section: str, name: str) -> str:
    """Where ``[section.name]`` comes from: ``built-in`` or the user file's path."""
    return current_catalog().origins[(section, name.lower())]


def family_preprocess(family: str) -> dict[str, Any]:
    """The ``[families.<family>.preprocess]`` defaults (for imports under a name not in the catalogue)."""
    return dict(load_catalog().get("families", {}).get(family, {}).get("preprocess", {}))


def dataset_names() -> list[str]:
    """Every dataset name in the catalogue."""
    return sorted(load_catalog().get("datasets", {}))


def _expand(template: str, full_name: str) -> str:
    return template.format(full_name=full_name)


def get_dataset_spec(name: str) -> DatasetSpec:
    """The catalogue entry for ``name`` (case-insensitive); unknown names get suggestions."""
    catalog = current_catalog()
    key = name.lower()
    entries = catalog.data.get("datasets", {})
    if key not in entries:
        raise UnknownNameError("dataset", name, entries)
    entry = entries[key]
    family = catalog.data.get("families", {}).get(entry["family"], {})
    full_name = entry.get("full_name", key)
    raw_files = {}
    for role in RAW_ROLES:
        if f"{role}_file" in family:
            raw_files[role] = {
                "file": _expand(family[f"{role}_file"], full_name),
                "urls": [_expand(u, full_name) for u in family.get(f"{role}_urls", [])],
                "sha256": entry.get("sha256", {}).get(role),
                "size": entry.get("size", {}).get(role),
            }
    where = f"[datasets.{key}]"
    filter_values = entry.get("filter", family.get("filter"))
    interaction_filter = InteractionFilter.from_mapping(filter_values, where) if filter_values is not None else None
    return DatasetSpec(
        name=key,
        family=entry["family"],
        full_name=full_name,
        expected=_counts(entry["expected"], where) if "expected" in entry else None,
        raw_files=raw_files,
        preprocess={**family.get("preprocess", {}), **entry.get("preprocess", {})},
        generator=dict(entry.get("generator", {})),
        interaction_filter=interaction_filter.canonical() if interaction_filter else None,
        expected_unfiltered=_counts(entry["expected_unfiltered"], where) if "expected_unfiltered" in entry else None,
        origin=catalog.origins[("datasets", key)],
    )


def get_suite(name: str) -> Suite:
    """The ``[suites.NAME]`` entry of the catalogue."""
    from recbench.names import check_name

    suites = load_catalog().get("suites", {})
    if check_name("suite", name).lower() not in suites:
        raise UnknownNameError("suite", name, suites)
    entry = suites[name.lower()]
    return Suite(
        name=name.lower(),
        description=entry.get("description", ""),
        sources=tuple(entry.get("sources", [])),
        targets=tuple(entry.get("targets", [])),
    )


def suite_names() -> list[str]:
    """Every suite name in the catalogue."""
    return sorted(load_catalog().get("suites", {}))


@dataclass(frozen=True)
class ReleaseFeatures:
    """The text-feature file of a release and the encoder setting it was computed with."""

    suffix: str  # the file is <Folder>.<suffix>
    dims: int
    encoder: str
    pooling: str
    max_tokens: int


@dataclass(frozen=True)
class ReleaseSpec:
    """One ``[releases.NAME]`` entry: where an authors' release is published and what it holds."""

    name: str
    description: str
    archive_file: str
    """The archive holding the datasets (a zip; its members end in ``<Folder>/<Folder>.<suffix>``)."""
    drive_folder: str | None
    """Google Drive folder id the archive is listed in (fetched with gdown)."""
    urls: tuple[str, ...]
    """Plain HTTP(S) copies of the archive, tried after Drive with recbench's own downloader."""
    manual: tuple[str, ...]
    """Copies that need a browser (named in the error when nothing else worked)."""
    sha256: str | None
    size: int | None
    files: tuple[str, ...]
    """Suffixes of the per-dataset files taken from the archive."""
    datasets: dict[str, str]
    """recbench dataset name -> the release's folder (and file prefix) name."""
    features: ReleaseFeatures
    origin: str = BUILTIN


def release_names() -> list[str]:
    """Every release name in the catalogue."""
    return sorted(load_catalog().get("releases", {}))


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DataError(f"{where}: expected a list of non-empty strings")
    return tuple(value)


def get_release_spec(name: str) -> ReleaseSpec:
    """The ``[releases.NAME]`` entry of the catalogue (case-insensitive); errors name the file."""
    catalog = current_catalog()
    releases = catalog.data.get("releases", {})
    key = name.lower()
    if key not in releases:
        raise UnknownNameError("release", name, releases)
    entry = releases[key]
    where = f"{catalog.origins[('releases', key)]}: [releases.{key}]"
    for required in ("archive_file", "datasets", "features", "files"):
        if required not in entry:
            raise DataError(f"{where} needs '{required}'")
    datasets = entry["datasets"]
    if not isinstance(datasets, dict) or not datasets or not all(isinstance(v, str) for v in datasets.values()):
        raise DataError(f'{where} datasets: expected a table of recbench name = "Folder"')
    features = entry["features"]
    if not isinstance(features, dict):
        raise DataError(f"{where} features: expected a table")
    try:
        parsed = ReleaseFeatures(
            suffix=str(features["file"]),
            dims=int(features["dims"]),
            encoder=str(features["encoder"]),
            pooling=str(features["pooling"]),
            max_tokens=int(features["max_tokens"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(
            f"{where} features: expected {{ file, dims, encoder, pooling, max_tokens }} ({type(err).__name__}: {err})"
        ) from None
    if parsed.dims <= 0 or parsed.max_tokens <= 0 or parsed.pooling not in ("cls", "mean"):
        raise DataError(f"{where} features: dims and max_tokens must be positive, pooling cls or mean")
    files = _strings(entry["files"], f"{where} files")
    if parsed.suffix not in files:
        raise DataError(f"{where}: files must include the features file '{parsed.suffix}'")
    from recbench.names import check_name

    for dataset, folder in datasets.items():
        check_name("dataset", dataset)
        check_name("release folder", folder)
    drive = entry.get("drive_folder")
    if drive is not None and not (isinstance(drive, str) and re.fullmatch(r"[A-Za-z0-9_-]+", drive)):
        raise DataError(f"{where} drive_folder: expected a Google Drive folder id")
    sha256 = entry.get("sha256")
    if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        raise DataError(f"{where} sha256: expected 64 hex digits")
    size = entry.get("size")
    if size is not None and not (type(size) is int and size > 0):
        raise DataError(f"{where} size: expected a positive whole number of bytes")
    return ReleaseSpec(
        name=key,
        description=str(entry.get("description", "")),
        archive_file=check_name("release archive", str(entry["archive_file"])),
        drive_folder=drive,
        urls=_strings(entry.get("urls", []), f"{where} urls"),
        manual=_strings(entry.get("manual", []), f"{where} manual"),
        sha256=sha256.lower() if sha256 else None,
        size=size,
        files=files,
        datasets={k.lower(): v for k, v in datasets.items()},
        features=parsed,
        origin=catalog.origins[("releases", key)],
    )

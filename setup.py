"""Build hook: the catalogue lives at the repository root (``datasets.toml``) and ships inside the package.

Everything else about the build is in ``pyproject.toml``. setuptools' package data can only name
files inside a package directory, so ``build_py`` is extended to copy the root file to
``recbench/data/datasets.toml`` in the build tree: wheels (and installs from an sdist, which
``MANIFEST.in`` makes carry the file) then hold it where
:func:`recbench.data.catalog.builtin_catalog_text` looks first. An editable install or a plain
checkout reads the root file directly.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CATALOGUE = Path(__file__).resolve().parent / "datasets.toml"


class BuildPyWithCatalogue(build_py):
    """``build_py`` that also places the root ``datasets.toml`` inside ``recbench/data``."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "recbench" / "data" / "datasets.toml"
        self.mkpath(str(target.parent))
        self.copy_file(str(CATALOGUE), str(target))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [
            *super().get_outputs(include_bytecode),
            str(Path(self.build_lib) / "recbench" / "data" / "datasets.toml"),
        ]


setup(cmdclass={"build_py": BuildPyWithCatalogue})

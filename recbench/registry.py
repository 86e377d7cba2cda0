"""The one registry of methods: ``@register``, plugin discovery, name look-up and configs.

Discovery imports every module of the built-in ``recbench_plugins`` package (the ``plugins/``
folder) and every ``recbench.methods`` entry point, each separately: a plugin that fails to
import is listed with its error and does not break the others.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from recbench.errors import ConfigError, UnknownNameError
from recbench.names import check_name
from recbench.method import Method, MethodConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENTRY_POINT_GROUP = "recbench.methods"


@dataclass(frozen=True)
class MethodEntry:
    """A registered name: the method class and the config values its variant presets."""

    name: str
    cls: type[Method]
    preset: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    @property
    def module(self) -> str:
        return self.cls.__module__


_methods: dict[str, MethodEntry] = {}
_failures: dict[str, str] = {}
_discovered = False


def register(name: str, *, variants: dict[str, dict[str, Any]] | None = None) -> Callable[[type[Method]], type[Method]]:
    """Class decorator registering a :class:`Method` under ``name``.

    ``variants`` maps further names to preset config overrides (e.g. UniSRec's text-only and
    text+ID fine-tuning), so each variant gets its own leaderboard row.
    """

    def decorate(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register('{name}') must decorate a subclass of recbench.method.Method")
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        for key, preset in {name: {}, **(variants or {})}.items():
            key = check_name("method", key).lower()
            if key in _methods and _methods[key].cls is not cls:
                raise ValueError(f"method name '{key}' is registered twice ({_methods[key].module} and {cls.__module__})")
            cls.Config.model_validate(preset)  # a bad preset is a plugin bug: fail loudly at import
            _methods[key] = MethodEntry(key, cls, dict(preset), summary)
        cls.name = name.lower()
        return cls

    return decorate


def _import_isolated(label: str, load: Callable[[], object]) -> None:
    try:
        load()
    except Exception:  # noqa: BLE001 - any plugin error is reported, never fatal
        _failures[label] = traceback.format_exc(limit=-3).strip().splitlines()[-1]


def discover(force: bool = False) -> None:
    """Import built-in plugins and entry-point plugins once (again with ``force``)."""
    global _discovered
    if _discovered and not force:
        return
    _discovered = True
    import recbench_plugins

    for info in pkgutil.iter_modules(recbench_plugins.__path__):
        module = f"recbench_plugins.{info.name}"
        _import_isolated(module, lambda module=module: importlib.import_module(module))
    for point in entry_points(group=ENTRY_POINT_GROUP):
        _import_isolated(f"{point.name} (entry point {point.value})", point.load)


def method_names() -> list[str]:
    discover()
    return sorted(_methods)


def methods() -> list[MethodEntry]:
    discover()
    return [_methods[name] for name in sorted(_methods)]


def failed_plugins() -> dict[str, str]:
    """Plugins that failed to import: label -> last line of the error."""
    discover()
    return dict(_failures)


def get_method(name: str) -> MethodEntry:
    """Look a method up by name; unknown names get close matches and any plugin import errors."""
    discover()
    key = name.lower()
    if key not in _methods:
        broken = "".join(f" Plugin {label} failed to import: {error}." for label, error in _failures.items())
        raise UnknownNameError("method", name, _methods, extra=broken)
    return _methods[key]


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``["hidden_size=64", "lr=1e-3", "tasks=['next']"]`` -> dict; values are TOML literals, else strings."""
    parsed: dict[str, Any] = {}
    for text in assignments:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got '{text}'")
        try:
            value = tomllib.loads(f"value = {raw.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        parsed[key.strip()] = value
    return parsed


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML file of ``key = value`` config overrides."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None


def resolve_config(entry: MethodEntry, *layers: dict[str, Any]) -> MethodConfig:
    """The method's typed config: published defaults < variant preset < each layer in order."""
    values: dict[str, Any] = dict(entry.preset)
    for layer in layers:
        values.update(layer)
    try:
        return entry.cls.Config.model_validate(values)
    except ValidationError as err:
        known = list(entry.cls.Config.model_fields)
        problems = []
        for error in err.errors():
            key = ".".join(str(p) for p in error["loc"])
            if error["type"] == "extra_forbidden":
                problems.append(str(UnknownNameError("config key", key, known, extra=f" (method '{entry.name}')")))
            else:
                problems.append(f"config key '{key}' of method '{entry.name}': {error['msg']} (got {error.get('input')!r})")
        raise ConfigError("; ".join(problems)) from None

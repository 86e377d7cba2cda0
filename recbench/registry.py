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
from recbench.method import ConfigRuleError, Method, MethodConfig
from recbench.names import check_name

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
                raise ValueError(
                    f"method name '{key}' is registered twice ({_methods[key].module} and {cls.__module__})"
                )
            cls.Config.model_validate(preset)  # a bad preset is a plugin bug: fail loudly at import
            _methods[key] = MethodEntry(key, cls, dict(preset), summary)
        cls.name = name.lower()
        return cls

    return decorate


def _import_isolated(label: str, load: Callable[[], object]) -> None:
    try:
        load()
    except Exception:  # any plugin error is reported, never fatal
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
    """A TOML file of ``key = value`` config overrides; any problem reading it is a one-line ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a TOML file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start}): expected a TOML file") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {_one_line(str(err))}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _show(value: Any) -> str:
    """A refused value as the user wrote it: TOML's true/false for booleans, else its repr."""
    if isinstance(value, bool):
        return str(value).lower()
    return _one_line(repr(value))


# Messages of the pydantic error types whose own wording is not a good "must ..." phrase.
_MESSAGES = {
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a table of key = value",
    "finite_number": "must be a finite number",
}


def _problem(entry: MethodEntry, error: Any, known: list[str]) -> str:
    """One pydantic error as ``config key 'k' of method 'm': must ... (got v)``."""
    loc, kind, ctx = tuple(error["loc"]), error["type"], error.get("ctx") or {}
    rule = ctx.get("error")
    if isinstance(rule, ConfigRuleError):  # a rule between keys names the key it is about
        return f"config key '{rule.key}' of method '{entry.name}': {_one_line(rule.message)} (got {_show(rule.value)})"
    if kind == "extra_forbidden":
        key = ".".join(str(part) for part in loc)
        return _one_line(str(UnknownNameError("config key", key, known, extra=f" (method '{entry.name}')")))
    if kind in _MESSAGES:
        message = _MESSAGES[kind]
    elif kind == "too_short":
        message = f"must have at least {ctx.get('min_length')} item(s)"
    elif kind == "string_too_short":
        message = f"must have at least {ctx.get('min_length')} character(s)"
    elif kind in ("greater_than_equal", "less_than_equal"):
        bound = ctx.get("ge", ctx.get("le"))
        bound = f"{bound:g}" if isinstance(bound, float) else bound  # 0, not 0.0
        message = f"must be at least {bound}" if "ge" in ctx else f"must be at most {bound}"
    else:
        message = str(error["msg"]).removeprefix("Value error, ").replace("Input should be", "must be", 1)
    if not loc:
        return f"config of method '{entry.name}': {_one_line(message)}"
    where = ""
    if len(loc) > 1:  # inside a list or a table: say which entry
        if loc[-1] == "[key]":
            where = f"key {loc[1]!r} "
        else:
            where = f"entry {loc[1]!r} " if isinstance(loc[1], str) else f"item {loc[1] + 1} "
    got = _show(error.get("input"))
    return f"config key '{loc[0]}' of method '{entry.name}': {where}{_one_line(message)} (got {got})"


def resolve_config(entry: MethodEntry, *layers: dict[str, Any]) -> MethodConfig:
    """The method's typed config: published defaults < variant preset < each layer in order."""
    values: dict[str, Any] = dict(entry.preset)
    for layer in layers:
        values.update(layer)
    try:
        return entry.cls.Config.model_validate(values)
    except ValidationError as err:
        known = list(entry.cls.Config.model_fields)
        raise ConfigError("; ".join(_problem(entry, error, known) for error in err.errors())) from None

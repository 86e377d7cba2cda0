"""Registry: discovery with isolated failures, name look-up, typed configs and overrides."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import recbench.registry as registry
from recbench.errors import ConfigError, UnknownNameError
from recbench.registry import get_method, parse_assignments, read_config_file, resolve_config

GOOD_PLUGIN = '''
import torch
from recbench.method import Method, MethodConfig
from recbench.registry import register


class PopConfig(MethodConfig):
    bias: float = 0.0
    """A constant added to every score."""


@register("test-popularity", variants={"test-popularity-biased": {"bias": 1.0}})
class Popularity(Method):
    """Scores items by a learned bias."""

    Config = PopConfig

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.logits = torch.nn.Parameter(torch.zeros(spec.num_items + 1))

    def loss(self, batch):
        known = batch.targets > 0
        return torch.nn.functional.cross_entropy(self.logits.expand(int(known.sum()), -1), batch.targets[known])

    def score(self, batch):
        return self.logits.expand(batch.items.shape[0], -1) + self.config.bias
'''


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Extra plugin modules on the built-in plugin path, with the registry restored afterwards."""
    import recbench_plugins

    registry.discover()  # the real plugins are in the registry before it is copied
    directory = tmp_path / "more_plugins"
    directory.mkdir()
    monkeypatch.setattr(recbench_plugins, "__path__", [*recbench_plugins.__path__, str(directory)])
    monkeypatch.setattr(registry, "_methods", dict(registry._methods))
    monkeypatch.setattr(registry, "_failures", {})
    yield directory
    for name in [m for m in sys.modules if m.startswith("recbench_plugins.zz_")]:
        del sys.modules[name]


def test_a_broken_plugin_is_reported_and_does_not_hide_the_others(plugin_dir: Path) -> None:
    (plugin_dir / "zz_broken.py").write_text("import a_module_that_does_not_exist\n")
    (plugin_dir / "zz_good.py").write_text(GOOD_PLUGIN)
    registry.discover(force=True)
    assert "test-popularity" in registry.method_names() and "sasrec" in registry.method_names()
    assert any(
        "zz_broken" in label and "a_module_that_does_not_exist" in error
        for label, error in registry.failed_plugins().items()
    )
    with pytest.raises(UnknownNameError, match="zz_broken failed to import"):
        get_method("broken-method")


def test_variants_are_separate_names_with_their_preset(plugin_dir: Path) -> None:
    (plugin_dir / "zz_good.py").write_text(GOOD_PLUGIN)
    registry.discover(force=True)
    assert resolve_config(get_method("test-popularity-biased")).bias == 1.0
    assert resolve_config(get_method("test-popularity")).bias == 0.0


def test_entry_point_plugins_are_loaded_in_isolation(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeEntryPoint:
        def __init__(self, name: str, load) -> None:
            self.name, self.value, self.load = name, f"pkg:{name}", load

    def fail() -> None:
        raise RuntimeError("entry point exploded")

    def good() -> None:
        exec(compile(GOOD_PLUGIN, "ep_plugin", "exec"), {"__name__": "ep_plugin"})

    monkeypatch.setattr(
        registry, "entry_points", lambda group: [FakeEntryPoint("bad", fail), FakeEntryPoint("good", good)]
    )
    registry.discover(force=True)
    assert "test-popularity" in registry.method_names()
    assert any("entry point exploded" in error for error in registry.failed_plugins().values())


def test_unknown_method_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: sasrec"):
        get_method("sasrek")


def test_config_carries_published_defaults() -> None:
    config = resolve_config(get_method("sasrec"))
    assert (config.hidden_size, config.inner_size, config.n_layers, config.n_heads) == (300, 256, 2, 2)
    assert (config.hidden_dropout_prob, config.attn_dropout_prob, config.learning_rate, config.train_batch_targets) == (
        0.5,
        0.5,
        1e-3,
        2048,
    )


def test_unknown_config_key_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'hiden_size'.*Did you mean: hidden_size"):
        resolve_config(get_method("sasrec"), {"hiden_size": 64})


def test_wrong_type_is_an_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="'n_layers'"):
        resolve_config(get_method("sasrec"), parse_assignments(["n_layers=two"]))


def test_assignments_parse_toml_literals() -> None:
    assert parse_assignments(["a=1", "b=1e-3", "c=true", "d=[1, 2]", "e=word", "f='quoted'"]) == {
        "a": 1,
        "b": 1e-3,
        "c": True,
        "d": [1, 2],
        "e": "word",
        "f": "quoted",
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["novalue"])


def test_later_layers_override_earlier_ones(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("hidden_size = 64\nn_layers = 3\n")
    config = resolve_config(get_method("sasrec"), read_config_file(path), parse_assignments(["n_layers=1"]))
    assert (config.hidden_size, config.n_layers) == (64, 1)


def test_every_config_field_has_a_docstring() -> None:
    for entry in registry.methods():
        undocumented = [name for name, field in entry.cls.Config.model_fields.items() if not field.description]
        assert not undocumented, f"{entry.name}: {undocumented}"

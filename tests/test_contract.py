"""Contract tests: :mod:`recbench.testing`'s checks on every built-in method (docs/architecture.md, Methods).

Third-party methods installed in the same environment are not checked unless named in
``$RECBENCH_TEST_PLUGINS`` (comma-separated registered names); their own tests call
:func:`recbench.testing.check_method`.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
import torch

import recbench
import recbench.registry as registry
from recbench.errors import UnknownNameError
from recbench.method import Batch, DataSpec, Method, MethodConfig
from recbench.runs.record import versions
from recbench.testing import (
    CHECKS,
    builtin_method_names,
    check_method,
    methods_to_test,
    opted_in_method_names,
    run_check,
    small_config,  # noqa: F401 - other test modules import it from here
    training_batches,  # noqa: F401 - other test modules import it from here
)

METHODS = methods_to_test()


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", METHODS)
def test_method_keeps_the_contract(name: str, check: str) -> None:
    reason = run_check(name, check)
    if reason is not None:
        pytest.skip(reason)


# --- the kit itself ----------------------------------------------------------------------------


class WidthConfig(MethodConfig):
    """Config of the test methods below."""

    bias: float = 0.0
    """A constant added to every score."""


class OneColumnShort(Method):
    """Scores N columns instead of N + 1: breaks the contract."""

    Config = WidthConfig

    def __init__(self, config: WidthConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.logits = torch.nn.Parameter(torch.zeros(spec.num_items + 1))

    def loss(self, batch: Batch) -> torch.Tensor:
        targets = batch.targets[batch.targets > 0]
        return torch.nn.functional.cross_entropy(self.logits.expand(len(targets), -1), targets)

    def score(self, batch: Batch) -> torch.Tensor:
        return self.logits[1:].expand(batch.size, -1) + self.config.bias


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry as discovered, restored after the test (which may register more)."""
    registry.discover()
    monkeypatch.setattr(registry, "_methods", dict(registry._methods))


def test_a_broken_method_fails_with_its_name_and_the_check(scratch_registry: None) -> None:
    registry.register("test-one-column-short")(OneColumnShort)
    with pytest.raises(
        AssertionError, match=r"method 'test-one-column-short' failed the contract check 'score'.*\(3, 30\)"
    ):
        check_method("test-one-column-short", checks=["config", "build", "score"])
    with pytest.raises(AssertionError, match="method 'no-such-method' is not registered"):
        check_method("no-such-method")
    with pytest.raises(ValueError, match="unknown contract check"):
        check_method("sasrec", checks=["no-such-check"])


def test_third_party_methods_are_tested_only_when_named(
    scratch_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.register("test-one-column-short")(OneColumnShort)  # defined here, not under recbench_plugins
    assert "sasrec" in builtin_method_names() and "test-one-column-short" not in builtin_method_names()
    monkeypatch.delenv("RECBENCH_TEST_PLUGINS", raising=False)
    assert methods_to_test() == builtin_method_names()
    monkeypatch.setenv("RECBENCH_TEST_PLUGINS", " test-one-column-short, sasrec ,")
    assert methods_to_test() == [*builtin_method_names(), "test-one-column-short"]
    with pytest.raises(UnknownNameError):
        opted_in_method_names("no-such-method")


def test_a_run_records_the_package_of_a_third_party_method() -> None:
    builtin = versions(registry.get_method("sasrec").cls)
    assert "plugin" not in builtin and builtin["recbench"] == recbench.__version__
    assert "plugin" not in versions()
    loose = type("Loose", (OneColumnShort,), {"__module__": "module_of_no_distribution.methods"})
    assert versions(loose)["plugin"] == {
        "module": "module_of_no_distribution.methods",
        "package": None,
        "version": None,
    }
    # a module of an installed distribution: its name and version (here pytest's own)
    pytest_like = type("PytestLike", (OneColumnShort,), {"__module__": "_pytest.fake_method"})
    assert versions(pytest_like)["plugin"] == {
        "module": "_pytest.fake_method",
        "package": "pytest",
        "version": importlib.metadata.version("pytest"),
    }


def test_the_contract_is_importable_from_the_package_root_without_torch() -> None:
    code = "import sys, recbench; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"  # `recbench --help` stays fast
    namespace: dict[str, object] = {}
    exec("from recbench import *", namespace)  # the star import a plugin author may write
    assert set(recbench.__all__) <= set(namespace)
    assert recbench.Method is Method and recbench.register is registry.register
    assert recbench.MethodConfig is MethodConfig and recbench.DataSpec is DataSpec and recbench.Batch is Batch
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        recbench.no_such_name  # noqa: B018

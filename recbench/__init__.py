"""recbench: benchmark transferable sequential recommenders.

One data format (:mod:`recbench.data.dataset`), one registry (:mod:`recbench.registry`), one trainer
(:mod:`recbench.runs.trainer`), one evaluator (:mod:`recbench.runs.evaluate`) and one run record
(:mod:`recbench.runs.record`); methods are plugins.

The plugin contract is importable from here (``from recbench import Method, register, ...``; the
names are listed in ``__all__``). They are loaded on first use, so ``import recbench`` (and with it
``recbench --help``) does not import torch. :mod:`recbench.testing` runs the contract checks on a
registered method.
"""

from __future__ import annotations

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing on the way to `recbench --help`

__version__ = "0.1.0"

# Public name -> the module that defines it; each is imported on first access (PEP 562).
_LAZY: dict[str, str] = {
    # the contract: a method, its config bases, what it is given
    "Method": "recbench.method",
    "MethodConfig": "recbench.method",
    "TransformerConfig": "recbench.method",
    "TextMethodConfig": "recbench.method",
    "TransferConfig": "recbench.method",
    "Batch": "recbench.method",
    "DataSpec": "recbench.method",
    "register": "recbench.registry",
    # value types of config fields, and the error of a rule between keys
    "StrictPositiveInt": "recbench.method",
    "StrictNonNegativeInt": "recbench.method",
    "StrictPositiveFloat": "recbench.method",
    "StrictNonNegativeFloat": "recbench.method",
    "Probability": "recbench.method",
    "DropoutProbability": "recbench.method",
    "ConfigRuleError": "recbench.method",
    # shared layers of the RecBole-style transformer methods
    "TransformerEncoder": "recbench.layers",
    "causal_mask": "recbench.layers",
    "bidirectional_mask": "recbench.layers",
    "init_recbole_weights": "recbench.layers",
}

__all__ = [
    "Method",
    "MethodConfig",
    "TransformerConfig",
    "TextMethodConfig",
    "TransferConfig",
    "Batch",
    "DataSpec",
    "register",
    "StrictPositiveInt",
    "StrictNonNegativeInt",
    "StrictPositiveFloat",
    "StrictNonNegativeFloat",
    "Probability",
    "DropoutProbability",
    "ConfigRuleError",
    "TransformerEncoder",
    "causal_mask",
    "bidirectional_mask",
    "init_recbole_weights",
    "__version__",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from typing import Any

    from recbench.layers import TransformerEncoder, bidirectional_mask, causal_mask, init_recbole_weights
    from recbench.method import (
        Batch,
        ConfigRuleError,
        DataSpec,
        DropoutProbability,
        Method,
        MethodConfig,
        Probability,
        StrictNonNegativeFloat,
        StrictNonNegativeInt,
        StrictPositiveFloat,
        StrictPositiveInt,
        TextMethodConfig,
        TransferConfig,
        TransformerConfig,
    )
    from recbench.registry import register


def __getattr__(name: str) -> Any:
    """Import a public name of the plugin contract on first access (and keep it for the next one)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'recbench' has no attribute '{name}'")
    from importlib import import_module  # here, not at the top: `import recbench` imports nothing

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

"""recbench: benchmark transferable sequential recommenders.

One data format (:mod:`recbench.data.dataset`), one registry (:mod:`recbench.registry`), one trainer
(:mod:`recbench.runs.trainer`), one evaluator (:mod:`recbench.runs.evaluate`) and one run record
(:mod:`recbench.runs.record`); methods are plugins.
"""

__version__ = "0.1.0"

"""recbench: benchmark transferable sequential recommenders.

One data format (:mod:`recbench.data`), one registry (:mod:`recbench.registry`), one trainer
(:mod:`recbench.train`), one evaluator (:mod:`recbench.evaluate`) and one run record
(:mod:`recbench.runs`); methods are plugins.
"""

__version__ = "0.1.0"

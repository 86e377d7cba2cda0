"""Runs: one (dataset, method, config, seed) trained by the one Trainer, evaluated by the one
Evaluator, and written as a run record (see docs/run-record.md).
"""

"""Datasets in: the catalogue, downloads and imports, the canonical Dataset, item-text embeddings.

The pipeline's first stage. :mod:`recbench.data.dataset` is the one data format every method,
the Trainer and the Evaluator read; the other modules bring data into it (see docs/architecture.md).
"""

"""Built-in method plugins, installed as the package ``recbench_plugins``.

Every module here is imported separately by :mod:`recbench.registry`; a module that fails to
import is reported with its error and does not break the others.
"""

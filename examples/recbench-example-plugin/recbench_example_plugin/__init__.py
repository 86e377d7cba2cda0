"""An example recbench method plugin: ``example-fmc`` (:mod:`recbench_example_plugin.fmc`).

recbench imports :mod:`recbench_example_plugin.fmc` through the ``recbench.methods`` entry point
declared in this distribution's ``pyproject.toml``; importing this package alone registers nothing.
"""

__version__ = "0.1.0"

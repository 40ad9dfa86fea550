"""The one place the version lives: hatchling reads it for the package metadata.

A module of its own, not ``__init__.py``: the modules that report the version (``cli``,
``telemetry``) then import a leaf, never the package facade that imports them.
"""

__version__ = "0.2.0"

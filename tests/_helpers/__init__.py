"""Test helpers: model builders, reference implementations, toy modules, shared data.

Imported as ``_helpers`` (``tests/`` is on the test path); fixtures in ``conftest.py`` only use
these, and no test imports from ``conftest``.
"""

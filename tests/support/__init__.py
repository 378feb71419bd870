"""Helpers of the kgraft test suite, importable by test modules (``from support.models import ...``;
``pythonpath = ["tests"]`` in pyproject.toml). ``conftest.py`` keeps the fixtures only."""

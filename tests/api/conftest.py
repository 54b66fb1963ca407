"""Fixtures of the API tests: billed accounts from the process tests' fixtures."""

from tests.processes.conftest import make_account  # noqa: F401  (fixture)

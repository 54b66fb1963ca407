"""Fixtures of the fuzz tests: example budgets that CI keeps small and HEATFLOW_FUZZ_EXAMPLES raises."""

import os

from tests.processes.conftest import make_account  # noqa: F401  (fixture)

# Examples per hypothesis test or per API operation. CI uses the default; set
# HEATFLOW_FUZZ_EXAMPLES=2000 (or more) for a longer run on a developer's machine.
FUZZ_EXAMPLES = int(os.environ.get("HEATFLOW_FUZZ_EXAMPLES", "60"))

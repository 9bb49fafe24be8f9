"""One rule for tests whose dependency is missing: skip outside CI, fail in CI.

CI (``.ci/run`` sets ``CI=1``) runs on a machine that scripts/setup.sh prepared, so a missing
program there is a broken set-up, not a reason to skip: the test fails and says what is
missing. Outside CI the test skips and says why.
"""

from __future__ import annotations

import os

import pytest


def skip_or_fail(reason: str):
    """Skip with ``reason``, or fail with it when the CI environment variable is set."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (in CI a missing dependency is a failure, not a skip)", pytrace=False)
    pytest.skip(f"outside CI only: {reason}")

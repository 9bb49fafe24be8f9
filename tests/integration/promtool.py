"""The promtool the tests run: scripts/setup.sh unpacks Debian's (pinned) into .cache/bin.

``promtool()`` returns its path; a missing promtool skips outside CI and fails in CI
(ci_gate.skip_or_fail). ``check_metrics(text)`` runs ``promtool check metrics`` (the text
exposition format parser plus promlint: counters end in _total, base units, no abbreviated
units, HELP on every family) and returns (rc, output); it refuses an empty text, which
promtool would accept.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.integration.ci_gate import skip_or_fail

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CACHED = os.path.join(REPO, ".cache", "bin", "promtool")


def promtool() -> str:
    path = os.environ.get("NODEFLEET_PROMTOOL") or (CACHED if os.access(CACHED, os.X_OK) else shutil.which("promtool"))
    if not path:
        skip_or_fail(f"promtool is not installed ({CACHED}; scripts/setup.sh unpacks it)")
    return path


def run(*args, stdin: str | None = None, cwd: str | None = None) -> tuple:
    proc = subprocess.run(
        [promtool(), *args], input=stdin, capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )
    return proc.returncode, proc.stdout + proc.stderr


def check_metrics(text: str) -> tuple:
    assert text.strip(), "no metrics to check (promtool accepts an empty text)"
    return run("check", "metrics", stdin=text)

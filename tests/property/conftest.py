# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property suite set-up: a seeded, bounded hypothesis profile and the read-only host.

- Profile ``nodefleet`` (loaded for every run of this directory): ``derandomize=True`` (the
  examples are a function of the test, so CI runs the same inputs every time), no example
  database (nothing written into the checkout), no deadline (a module run may take a few
  tens of milliseconds on a busy 2-core machine). Per test ``max_examples`` comes from
  ``harness.examples(default)``; ``NODEFLEET_PROPERTY_EXAMPLES=<n>`` raises every test to at
  least n for a deep run.
- The pytest process enters the read-only namespace of ``sandbox.py`` before any test runs:
  the host is read-only but /tmp (a private, per-run /tmp). Without the privilege for that
  the suite still runs but leaves out the system-directory paths; with CI set it fails.
"""

from __future__ import annotations

import os

import pytest
from ansible_collections.nodefleet.bitcoin.tests.property import sandbox
from hypothesis import HealthCheck, settings

settings.register_profile(
    "nodefleet",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
settings.load_profile("nodefleet")


def pytest_configure(config):
    try:
        sandbox.enter()
    except OSError as exc:
        raise pytest.UsageError("tests/property: could not make the host read-only: %s" % exc) from exc
    if not sandbox.ACTIVE and os.environ.get("CI"):
        raise pytest.UsageError(
            "tests/property: the read-only host namespace is required in CI (%s); run as root" % sandbox.REASON
        )
    # Everything ansible (the -vvvv sample) or a daemon writes must go to /tmp.
    for var in ("ANSIBLE_LOCAL_TEMP", "ANSIBLE_REMOTE_TEMP", "ANSIBLE_HOME"):
        os.environ[var] = "/tmp/ansible-home/" + var.lower()
    os.environ["HOME"] = "/tmp/home"
    os.makedirs("/tmp/home", exist_ok=True)


def pytest_report_header(config):
    return "nodefleet property suite: sandbox %s" % sandbox.REASON


def pytest_terminal_summary(terminalreporter):
    from ansible_collections.nodefleet.bitcoin.tests.property import harness

    if harness.STATS:
        terminalreporter.section("nodefleet property examples")
        for module, counts in sorted(harness.STATS.items()):
            terminalreporter.write_line(
                "%s: %s" % (module, ", ".join("%s %d" % (k, v) for k, v in sorted(counts.items())))
            )

    for (module, option), n in sorted(harness.REASONS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line("  refused %s %s: %d" % (module, option, n))


def pytest_unconfigure(config):
    sandbox.leave()

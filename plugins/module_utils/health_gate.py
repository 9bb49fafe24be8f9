# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health gate after a restart of one bitcoind instance (pure logic, no I/O).

``evaluate(before, after, expect, thresholds, now)`` compares what ``bitcoind_info`` reported
for one instance after a restart (``after``) with what it reported before (``before``,
optional) and with what the restart was meant to produce (``expect``), and returns::

    {ok, final, instance, host, failures: [{check, expected, actual}], checked: [...], message}

Checks, in this order (a check without its inputs is not made and not listed in ``checked``):

``rpc``         RPC answers: bitcoind_info state ``up`` (``warming_up`` - RPC error -28 - is not).
                When RPC does not answer, no other check is made (there is nothing to compare).
``supervised``  supervisord runs the process that answers (state RUNNING, not ``unsupervised``),
                when supervisord was queried.
``chain``       ``getblockchaininfo.chain`` is ``expect.chain``, else ``before.chain``, else the
                network the instance is configured for (``after.network``).
``version``     ``getnetworkinfo.version`` == ``expect.version`` (only when given).
``subversion``  ``getnetworkinfo.subversion`` == ``expect.subversion`` (only when given).
``height``      ``blocks`` >= ``before.blocks`` - ``thresholds.max_height_loss`` (only with a
                ``before`` height).
``settle``      no restart of the program within the settle window: supervisord's pid is still
                ``expect.pid`` (the pid the restart produced, when given) and the process has been
                up for at least ``thresholds.settle`` seconds (supervisord's uptime, or ``now`` -
                its start time, else RPC ``uptime``).
``peers``       when ``before`` had peers (``peers.total`` > 0) and ``thresholds.min_peers`` > 0:
                ``peers.total`` >= min(``min_peers``, ``before.peers.total``) - an instance is
                never asked for more peers than it had, and one that had none is not checked.

``final`` is true when the result cannot change by waiting: it passed, or a failure is one that
waiting does not clear (wrong chain, version or subversion; a new pid - the program restarted
inside the window; supervisord gave up (FATAL) or the program was stopped). A poll loop stops
at ``ok or final`` or at its deadline.
"""

from __future__ import annotations

import time

CHECKS = ("rpc", "supervised", "chain", "version", "subversion", "height", "settle", "peers")
THRESHOLDS = {"settle": 30, "min_peers": 1, "max_height_loss": 0}
EXPECT_KEYS = ("chain", "version", "subversion", "pid")
# supervisord states from which the program does not come back without an explicit start.
DEAD_SUPERVISOR_STATES = ("FATAL", "STOPPED")
# Failures that waiting cannot clear.
FINAL_CHECKS = ("chain", "version", "subversion")


class GateInputError(ValueError):
    """An input of the gate is malformed; the message names it."""


def _int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def pick_row(value, instance=None):
    """One instance row from a bitcoind_info row or a whole bitcoind_info result.

    A whole result (a dict with an ``instances`` list) gives the row named ``instance``, or its
    only row when ``instance`` is not given. None, an empty dict or a missing row give None.
    """
    if value is None or value == {} or value == "":
        return None
    if not isinstance(value, dict):
        raise GateInputError(f"expected a bitcoind_info result or instance row (dict), got {type(value).__name__}")
    if "instances" in value and isinstance(value["instances"], list):
        rows = [r for r in value["instances"] if isinstance(r, dict)]
        if instance is not None:
            rows = [r for r in rows if r.get("name") == instance]
        return rows[0] if len(rows) == 1 else None
    if "instances" in value or value.get("failed") or value.get("unreachable") or value.get("skipped"):
        return None  # a failed, unreachable or skipped task result has no row
    if instance is not None and value.get("name") not in (None, instance):
        return None
    return value


def _result_error(value) -> str:
    """Why a whole bitcoind_info result gives no row (for the rpc failure's actual value)."""
    if isinstance(value, dict):
        if value.get("unreachable"):
            return "host unreachable: " + str(value.get("msg", ""))
        if value.get("failed"):
            return "bitcoind_info failed: " + str(value.get("msg", ""))
        if isinstance(value.get("instances"), list):
            return "no status row for the instance"
    return "no status"


def check_thresholds(thresholds) -> dict:
    """Thresholds with defaults filled in; each a non-negative integer."""
    if thresholds is None:
        thresholds = {}
    if not isinstance(thresholds, dict):
        raise GateInputError(f"thresholds: expected a dict, got {type(thresholds).__name__}")
    unknown = sorted(set(thresholds) - set(THRESHOLDS))
    if unknown:
        raise GateInputError(f"thresholds: unknown keys {unknown} (known: {', '.join(sorted(THRESHOLDS))})")
    out = dict(THRESHOLDS)
    for key, value in thresholds.items():
        if value is None:
            continue
        number = _int(value)
        if number is None or number < 0:
            raise GateInputError(f"thresholds.{key}: must be an integer >= 0, got {value!r}")
        out[key] = number
    return out


def check_expect(expect) -> dict:
    if expect is None:
        return {}
    if not isinstance(expect, dict):
        raise GateInputError(f"expect: expected a dict with {', '.join(EXPECT_KEYS)}, got {type(expect).__name__}")
    unknown = sorted(set(expect) - set(EXPECT_KEYS))
    if unknown:
        raise GateInputError(f"expect: unknown keys {unknown} (known: {', '.join(EXPECT_KEYS)})")
    out = {}
    for key, value in expect.items():
        if value is None or value == "":
            continue
        if key in ("version", "pid"):
            number = _int(value)
            if number is None or number < 0:
                raise GateInputError(f"expect.{key}: must be an integer >= 0, got {value!r}")
            if key == "pid" and number == 0:
                continue  # supervisord's "not running": no pid to hold on to
            out[key] = number
        else:
            out[key] = str(value)
    return out


def _uptime(row: dict, now) -> tuple[int | None, str]:
    """Seconds the current process has been up, and where that came from."""
    sup = row.get("supervisord") if isinstance(row.get("supervisord"), dict) else None
    if sup:
        uptime = _int(sup.get("uptime"))
        if uptime is not None and uptime > 0:
            return uptime, "supervisord uptime"
        start = sup.get("start")
        if isinstance(start, (int, float)) and not isinstance(start, bool) and start > 0 and now is not None:
            return max(0, int(now - start)), "now - supervisord start"
    uptime = _int(row.get("uptime"))
    if uptime is not None:
        return uptime, "rpc uptime"
    return None, ""


def describe(result: dict) -> str:
    """One line naming host, instance and every failed check with its values."""
    where = f"host {result.get('host') or '?'} instance {result.get('instance') or '?'}"
    if result.get("ok"):
        return f"{where}: health gate passed ({', '.join(result.get('checked') or [])})"
    parts = [f"{f['check']}: expected {f['expected']}, actual {f['actual']}" for f in result.get("failures", [])]
    return f"{where}: health gate failed - " + "; ".join(parts)


def evaluate(before, after, expect=None, thresholds=None, now=None, host=None, instance=None) -> dict:
    """The gate's verdict for one instance; see the module docstring."""
    limits = check_thresholds(thresholds)
    want = check_expect(expect)
    if now is None:
        now = time.time()
    after_row = pick_row(after, instance)
    before_row = pick_row(before, instance)
    name = instance or (after_row or {}).get("name") or (before_row or {}).get("name")
    failures: list[dict] = []
    checked: list[str] = []
    final = False

    def fail(check, expected, actual, is_final=False):
        nonlocal final
        failures.append({"check": check, "expected": expected, "actual": actual})
        final = final or is_final

    sup = (after_row or {}).get("supervisord") if isinstance((after_row or {}).get("supervisord"), dict) else None
    sup_state = (sup or {}).get("state")

    checked.append("rpc")
    if after_row is None:
        fail("rpc", "up", _result_error(after))
    elif after_row.get("state") != "up":
        actual = str(after_row.get("state"))
        if after_row.get("message"):
            actual += f" ({after_row['message']})"
        fail("rpc", "up", actual, is_final=sup_state in DEAD_SUPERVISOR_STATES)
    if failures:
        return _result(False, final, name, host, failures, checked)

    row = after_row
    if sup is not None:
        checked.append("supervised")
        if sup_state != "RUNNING" or row.get("unsupervised"):
            actual = f"supervisord state {sup_state}" + (
                ", RPC answers unsupervised" if row.get("unsupervised") else ""
            )
            fail("supervised", "supervisord state RUNNING", actual, is_final=sup_state in DEAD_SUPERVISOR_STATES)

    chain = want.get("chain") or (before_row or {}).get("chain") or row.get("network")
    if chain:
        checked.append("chain")
        if row.get("chain") != chain:
            fail("chain", chain, row.get("chain"), is_final=True)

    for key in ("version", "subversion"):
        if key in want:
            checked.append(key)
            actual = row.get(key)
            if (_int(actual) if key == "version" else actual) != want[key]:
                fail(key, want[key], actual, is_final=True)

    before_height = _int((before_row or {}).get("blocks"))
    if before_height is not None:
        checked.append("height")
        floor = before_height - limits["max_height_loss"]
        height = _int(row.get("blocks"))
        if height is None or height < floor:
            fail("height", f">= {floor} (before {before_height} - max loss {limits['max_height_loss']})", height)

    pid = _int((sup or {}).get("pid"))
    uptime, source = _uptime(row, now)
    if "pid" in want or uptime is not None:
        checked.append("settle")
        if "pid" in want and pid is not None and pid != want["pid"]:
            fail("settle", f"pid {want['pid']} (no restart within {limits['settle']}s)", f"pid {pid}", is_final=True)
        elif uptime is None or uptime < limits["settle"]:
            fail("settle", f"up for >= {limits['settle']}s", f"{uptime}s ({source})" if source else "unknown")

    before_peers = _int(((before_row or {}).get("peers") or {}).get("total"))
    if limits["min_peers"] > 0 and before_peers:
        checked.append("peers")
        need = min(limits["min_peers"], before_peers)
        peers = _int((row.get("peers") or {}).get("total"))
        if peers is None or peers < need:
            fail("peers", f">= {need} (had {before_peers}, min_peers {limits['min_peers']})", peers)

    return _result(not failures, final or not failures, name, host, failures, checked)


def _result(ok, final, name, host, failures, checked) -> dict:
    result = {
        "ok": bool(ok),
        "final": bool(final),
        "instance": name,
        "host": host,
        "failures": failures,
        "checked": checked,
    }
    result["message"] = describe(result)
    return result

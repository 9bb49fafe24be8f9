# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``after | nodefleet.bitcoin.health_gate(...)``: the health gate after one instance's restart.

The logic is ``module_utils/health_gate.py`` (``evaluate``); this only adapts it to a filter.
Documentation: health_gate.yml next to this file.
"""

from __future__ import annotations

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - ansible is always present where filters run
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]


def health_gate(after, before=None, expect=None, thresholds=None, now=None, host=None, name=None):
    # Imported on use: Ansible loads every filter file of the collection in each worker that resolves
    # any of its filters (plugins/filter/README.md), so a module-level import would cost every task.
    from ansible_collections.nodefleet.bitcoin.plugins.module_utils.health_gate import GateInputError, evaluate

    try:
        if now is not None:
            now = float(now)
        return evaluate(before, after, expect=expect, thresholds=thresholds, now=now, host=host, instance=name)
    except (GateInputError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"health_gate: {exc}") from None


class FilterModule:
    def filters(self):
        return {"health_gate": health_gate}

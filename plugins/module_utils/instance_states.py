# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state names of a bitcoind instance, one list for everything that reports them.

bitcoind_info decides an instance's state; the fleet_status filters (table, JSON report,
Prometheus) count and label by it. Both import this tuple, so a new state cannot reach one
and not the other.

- ``up``: RPC answers.
- ``warming_up``: RPC answers with error -28 (Core is loading, not down).
- ``down``: nothing answers (stopped, FATAL, not running).
- ``hung``: the process runs but RPC does not answer within the budget.
- ``auth_failed``: RPC refused the credentials (HTTP 401).
- ``error``: any other failure (unreadable config, unexpected RPC error).
- ``restarting``: supervisord keeps restarting it (a restart loop: the program reaches
  RUNNING and exits again, so supervisord never declares it FATAL).
- ``unlisted``: on the host (a program file or onion service the collection wrote) but no longer
  in the inventory, neither present nor absent (module_utils/managed.py); its message says what
  still runs. Reported only when the caller passes the inventory's names (bitcoind_info ``listed``).
"""

from __future__ import annotations

STATES = ("up", "warming_up", "down", "hung", "auth_failed", "error", "restarting", "unlisted")

# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``best_block_time`` (bitcoind_info / instance_info) is the tip block's header time, on real
Bitcoin Core and on the stand-in: Core 28.99's getblockchaininfo has ``time``, and the value
reported is that of ``getblockheader(getbestblockhash)``, also after a block is mined.

Real Core skips (saying why) only when its archive is absent and CI is unset; in CI it fails.
"""

from __future__ import annotations

import time

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import instance_info
from ansible_collections.nodefleet.bitcoin.tests.integration.real_core import (  # noqa: F401
    make_node,
    real_core,
)
from ansible_collections.nodefleet.bitcoin.tests.integration.test_real_core import (
    REGTEST_ADDR,
    info_target,
    node_for,
    password_for,
    write_instance,
)

pytestmark = pytest.mark.integration


def tip_time(node) -> int:
    return node.result("getblockheader", [node.result("getbestblockhash")])["time"]


def test_best_block_time_is_the_tip_header_time_on_real_core(real_core, make_node, tmp_path):  # noqa: F811
    inst = write_instance(tmp_path, "bt", "regtest", "clearnet")
    node = node_for(make_node, real_core, inst)
    node.start()
    node.wait_rpc()
    chain = node.result("getblockchaininfo")
    assert isinstance(chain["time"], int), chain  # Core 28.99 has it
    target = info_target(inst, password_for("bt"))
    genesis = instance_info.query_instance(target, time.monotonic() + 5)
    assert genesis["state"] == "up"
    assert genesis["best_block_time"] == tip_time(node) == 1296688602  # regtest genesis
    node.result("generatetoaddress", [1, REGTEST_ADDR])
    mined = instance_info.query_instance(target, time.monotonic() + 5)
    assert mined["blocks"] == 1
    assert mined["best_block_time"] == tip_time(node)
    assert abs(mined["best_block_time"] - time.time()) < 600  # a block mined now carries about now
    assert node.stop() == 0


def test_best_block_time_from_the_stand_in(tmp_path):
    """The stand-in answers getblockchaininfo ``time`` as Core does (tests/standin/bitcoind)."""
    from ansible_collections.nodefleet.bitcoin.tests.integration.real_core import Node
    from ansible_collections.nodefleet.bitcoin.tests.integration.test_bitcoind_info import STANDIN

    inst = write_instance(tmp_path, "bs", "regtest", "clearnet")
    node = Node(STANDIN, inst["datadir"], inst["rpc"], auth=("monitor", password_for("bs")))
    node.start()
    try:
        node.wait_rpc()
        got = instance_info.query_instance(info_target(inst, password_for("bs")), time.monotonic() + 5)
        assert got["state"] == "up"
        chain = node.result("getblockchaininfo")
        assert isinstance(chain["time"], int)
        assert got["best_block_time"] == chain["time"]
    finally:
        node.stop()

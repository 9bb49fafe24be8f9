# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/instance_info: the one implementation of bitcoind_info's queries.

- the module is a thin wrapper: the functions it exposes are instance_info's own objects
  (no second copy), and the module file holds no query logic;
- ``best_block_time`` comes from getblockchaininfo ``time`` (an int, else None);
- ``validate`` checks what the collector reads from its JSON config (no AnsibleModule there):
  types, choices, unknown fields, the module's own rules, with the option named;
- the collector's copy of module_utils (roles/monitoring/vars/main.yml) is exactly the import
  closure of what it imports, so a new import in module_utils cannot be left off the node.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import instance_info
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError
from ansible_collections.nodefleet.bitcoin.plugins.modules import bitcoind_info

REPO = Path(__file__).resolve().parents[4]
MODULE_UTILS = REPO / "plugins" / "module_utils"
COLLECTOR = REPO / "roles" / "monitoring" / "files" / "nodefleet_collector.py"
ROLE_VARS = REPO / "roles" / "monitoring" / "vars" / "main.yml"
PREFIX = "ansible_collections.nodefleet.bitcoin.plugins.module_utils"


@pytest.mark.parametrize(
    "name",
    ["query_instance", "resolve_instance", "run_parallel", "assemble", "apply_rpc_answers", "parse_bitcoin_conf"],
)
def test_the_module_uses_instance_infos_functions(name):
    assert getattr(bitcoind_info, name) is getattr(instance_info, name)


def test_the_module_file_holds_no_query_logic():
    tree = ast.parse((REPO / "plugins" / "modules" / "bitcoind_info.py").read_text())
    functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert functions == ["main"]
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not imported & {"BitcoinRpc", "SupervisorClient", "peer_breakdown", "threading"}


def blank():
    target = {
        "name": "a1",
        "network": "regtest",
        "impl": "core",
        "pruned_conf": False,
        "ports": {},
        "onion_address": None,
        "tor_mode": None,
        "program": "bitcoind-a1",
    }
    return instance_info.blank_result(target)


@pytest.mark.parametrize(
    ("chain_time", "expected"),
    [(1714777860, 1714777860), (None, None), ("1714777860", None), (True, None), (1.5, None)],
)
def test_best_block_time_is_getblockchaininfos_time(chain_time, expected):
    result = blank()
    assert result["best_block_time"] is None
    chain = {"chain": "regtest", "blocks": 3, "headers": 3}
    if chain_time is not None:
        chain["time"] = chain_time
    instance_info.apply_rpc_answers(result, chain, {}, [], 5)
    assert result["best_block_time"] == expected
    assert result["best_block_time"] is None or (
        isinstance(result["best_block_time"], int) and not isinstance(result["best_block_time"], bool)
    )


def test_best_block_time_is_documented_in_return():
    returned = yaml.safe_load(bitcoind_info.RETURN)["instances"]["contains"]
    assert returned["best_block_time"]["type"] == "int"


@pytest.mark.parametrize(
    ("params", "option"),
    [
        ({"timeout": "5"}, None),  # not a number: TypeError, the collector reports it as malformed
        ({"timeout": 0}, "timeout"),
        ({"conf_dir": "relative"}, "conf_dir"),
        ({"instances": [{"rpc_port": 8332}]}, "instances[0]"),
        ({"instances": ["a1"]}, "instances[0]"),
        ({"instances": [{"name": "a1", "rpc_pasword": "x"}]}, "instances[0]"),
        ({"instances": [{"name": "a1", "network": "mainnet"}]}, "instances[0].network"),
        ({"instances": [{"name": "a1", "tor_mode": "tor"}]}, "instances[0].tor_mode"),
        ({"instances": [{"name": "a1", "rpc_port": "8332"}]}, "instances[0].rpc_port"),
        ({"instances": [{"name": "a1", "rpc_password": 7}]}, "instances[0].rpc_password"),
        ({"instances": [{"name": "a1", "zmq_ports": [1]}]}, "instances[0].zmq_ports"),
        ({"instances": [{"name": "a1"}, {"name": "a1"}]}, "instances"),
        ({"instances": [{"name": "a1"}], "names": ["b2"]}, "names"),
        ({"credentials": {"a1": {}}}, "credentials"),
    ],
)
def test_validate_names_the_option(params, option, tmp_path):
    params = {"conf_dir": str(tmp_path), **params}
    if option is None:
        with pytest.raises(TypeError):
            instance_info.validate(params)
        return
    with pytest.raises(ValidationError) as caught:
        instance_info.validate(params)
    assert caught.value.option == option, str(caught.value)


def test_validate_fills_the_defaults_and_filters_names(tmp_path):
    params = {"instances": [{"name": "a1"}, {"name": "b2"}], "names": ["b2"], "conf_dir": str(tmp_path)}
    specs = instance_info.validate(params)
    assert [s["name"] for s in specs] == ["b2"]
    assert params["timeout"] == instance_info.DEFAULTS["timeout"]
    assert params["supervisor_url"] == instance_info.DEFAULTS["supervisor_url"]


def test_validate_discovers_program_files(tmp_path):
    for name in ("b2", "a1", "not ok"):
        (tmp_path / f"bitcoind-{name}.conf").write_text("[program:x]\n")
    (tmp_path / "other.conf").write_text("")
    assert [s["name"] for s in instance_info.validate({"conf_dir": str(tmp_path)})] == ["a1", "b2"]


def test_the_module_defaults_are_instance_infos():
    doc = yaml.safe_load(bitcoind_info.DOCUMENTATION)["options"]
    for key, value in instance_info.DEFAULTS.items():
        if key in ("names", "credentials"):
            assert "default" not in doc[key]
        else:
            assert doc[key]["default"] == value, key


def module_utils_imports(path: Path) -> set:
    """module_utils file names ``path`` imports (``from <PREFIX> import x`` and ``from <PREFIX>.x import y``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or not node.module:
            continue
        if node.module == PREFIX:
            found |= {alias.name + ".py" for alias in node.names}
        elif node.module.startswith(PREFIX + "."):
            found.add(node.module[len(PREFIX) + 1 :].split(".")[0] + ".py")
    return found


def test_the_role_installs_exactly_the_collectors_import_closure():
    closure: set = set()
    pending = sorted(module_utils_imports(COLLECTOR))
    assert {"instance_info.py", "metrics.py", "safe_fs.py"} <= set(pending)
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        closure.add(name)
        assert (MODULE_UTILS / name).is_file(), name
        pending.extend(module_utils_imports(MODULE_UTILS / name) - closure)
    listed = yaml.safe_load(ROLE_VARS.read_text())["monitoring__module_utils"]
    assert sorted(listed) == listed, "keep the list sorted"
    assert set(listed) == closure


def test_module_utils_the_collector_needs_import_no_ansible():
    listed = yaml.safe_load(ROLE_VARS.read_text())["monitoring__module_utils"]
    for name in listed:
        for node in ast.walk(ast.parse((MODULE_UTILS / name).read_text())):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "ansible" for a in node.names), name
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] != "ansible", (name, node.module)

# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tor_hidden_service against a real, offline tor (see tor_fixture.py).

Every test runs the module the way users do: ``ansible localhost -m
nodefleet.bitcoin.tor_hidden_service`` with the repository's ansible.cfg and the json
stdout callback, so argument_spec, check mode, diff and no_log are exercised for real.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.nodefleet.bitcoin.tests.integration import tor_fixture
from ansible_collections.nodefleet.bitcoin.tests.integration.tor_fixture import TorDaemon

pytestmark = pytest.mark.integration
tor = tor_fixture.tor  # the fixture: a started, offline tor in a temp dir

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / ".venv" / "bin" / "ansible"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
MODULE = "nodefleet.bitcoin.tor_hidden_service"
P2P = [{"port": 8333, "target": "127.0.0.1:8334"}]


def ansible(args: dict, *flags: str, callback: str = "json") -> tuple[dict | None, subprocess.CompletedProcess]:
    """Run the module once on localhost; (the host's result or None, the finished process)."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK=callback,
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_NOCOLOR="1",
    )
    argv = [str(ANSIBLE), "localhost", "-i", "localhost,", "-c", "local"]
    argv += ["-e", f"ansible_python_interpreter={PYTHON}", "-m", MODULE, "-a", json.dumps(args), *flags]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    result = None
    if callback == "json":
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result, proc


def playbook(tmp_path: Path, args: dict, *flags: str) -> subprocess.CompletedProcess:
    """Run the module as a playbook task; ``secret_key`` values come from an extra-vars file, as from a vault."""
    secrets, task = {}, json.loads(json.dumps(args))
    for index, svc in enumerate([task, *task.get("services", [])]):
        if "secret_key" in svc:
            secrets[f"key_{index}"] = svc["secret_key"]
            svc["secret_key"] = "{{ key_" + str(index) + " }}"
    (tmp_path / "vars.json").write_text(json.dumps(secrets))
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [{"name": "onion", MODULE: task}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    argv = [str(ANSIBLE) + "-playbook", "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={PYTHON}"]
    argv += ["-e", f"@{tmp_path / 'vars.json'}", *flags, str(tmp_path / "play.yml")]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def run(tor: TorDaemon, *flags: str, **options) -> dict:
    return ansible({**tor.module_args(), **options}, *flags)[0]


def service(tor: TorDaemon, name: str, **options) -> dict:
    return {"name": name, "service_dir": str(tor.service_root / name), "ports": P2P, **options}


def key_b64(directory: Path) -> str:
    return base64.b64encode((directory / "hs_ed25519_secret_key").read_bytes()).decode()


def hostname(directory: Path) -> str:
    return (directory / "hostname").read_text().strip()


def settle_reloads(tor: TorDaemon, expected: int) -> int:
    """Wait until tor has logged ``expected`` reloads in total (each is logged before tor acts on it)."""
    return tor.wait_for_reloads(expected)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files_under(*dirs: Path) -> set[str]:
    return {str(p) for d in dirs for p in d.rglob("*")}


# --------------------------------------------------------------------------- behaviour


def test_create_is_idempotent_and_the_address_survives_reruns_and_tor_restarts(tor):
    svc_dir = tor.service_root / "core-main"
    reloads = tor.reload_count()
    first = run(tor, "--diff", **service(tor, "core-main"))
    assert first["changed"] is True and first["reloaded"] is True, first
    address = first["onion_address"]
    assert address == hostname(svc_dir)
    assert address.endswith(".onion") and len(address) == 62
    assert first["services"]["core-main"]["onion_address"] == address
    dropin = tor.torrc_dir / "nodefleet-core-main.conf"
    assert first["torrc_dropin"] == str(dropin)
    assert first["diff"]["after"] == dropin.read_text()
    assert f"HiddenServiceDir {svc_dir}\n" in dropin.read_text()
    assert "HiddenServicePort 8333 127.0.0.1:8334\n" in dropin.read_text()
    assert mode(dropin) == 0o644 and mode(svc_dir) == 0o700
    assert mode(svc_dir / "hs_ed25519_secret_key") == 0o600
    assert settle_reloads(tor, reloads + 1) == reloads + 1
    key = (svc_dir / "hs_ed25519_secret_key").read_bytes()

    second = run(tor, **service(tor, "core-main"))
    assert second["changed"] is False and second["reloaded"] is False, second
    assert second["onion_address"] == address
    assert tor.reload_count() == reloads + 1  # no SIGHUP on a no-op run

    old_pid = tor.pid
    tor.restart()
    assert tor.pid != old_pid
    assert hostname(svc_dir) == address
    third = run(tor, **service(tor, "core-main"))
    assert third["changed"] is False and third["onion_address"] == address
    assert (svc_dir / "hs_ed25519_secret_key").read_bytes() == key


def test_restore_a_purged_service_from_its_key_gives_the_same_address(tor):
    svc_dir = tor.service_root / "a"
    address = run(tor, **service(tor, "a"))["onion_address"]
    backup = key_b64(svc_dir)

    purged = run(tor, name="a", state="absent", purge=True)
    assert purged["changed"] is True and purged["reloaded"] is True
    assert not svc_dir.exists()
    assert not (tor.torrc_dir / "nodefleet-a.conf").exists()

    restored = run(tor, **service(tor, "a", secret_key=backup))
    assert restored["changed"] is True, restored
    assert restored["onion_address"] == address == hostname(svc_dir)
    assert key_b64(svc_dir) == backup
    assert mode(svc_dir / "hs_ed25519_secret_key") == 0o600
    assert (svc_dir / "hs_ed25519_secret_key").stat().st_uid == os.getuid()

    # the same key again is a no-op
    again = run(tor, **service(tor, "a", secret_key=backup))
    assert again["changed"] is False and again["reloaded"] is False


def test_a_different_key_is_refused_unless_force_key(tor):
    a_dir, b_dir = tor.service_root / "a", tor.service_root / "b"
    address_a = run(tor, **service(tor, "a"))["onion_address"]
    address_b = run(tor, **service(tor, "b"))["onion_address"]
    key_a, key_b = key_b64(a_dir), key_b64(b_dir)
    run(tor, name="b", state="absent", purge=True)
    reloads = settle_reloads(tor, tor.reload_count())

    refused, proc = ansible({**tor.module_args(), **service(tor, "a", secret_key=key_b)})
    assert refused["failed"] is True
    assert refused["msg"].startswith("secret_key: ")
    assert "would change its onion address" in refused["msg"] and "force_key" in refused["msg"]
    assert key_b not in proc.stdout + proc.stderr
    assert key_b64(a_dir) == key_a and hostname(a_dir) == address_a
    assert tor.reload_count() == reloads

    forced = run(tor, **service(tor, "a", secret_key=key_b, force_key=True))
    assert forced["changed"] is True and forced["reloaded"] is True
    assert forced["onion_address"] == address_b == hostname(a_dir)
    assert key_b64(a_dir) == key_b


def test_batch_of_three_services_reloads_tor_once(tor):
    names = ["n1", "n2", "n3"]
    reloads = tor.reload_count()
    batch = {"services": [service(tor, n) for n in names]}
    first = run(tor, **batch)
    assert first["changed"] is True and first["reloaded"] is True
    assert settle_reloads(tor, reloads + 1) == reloads + 1
    addresses = {n: first["services"][n]["onion_address"] for n in names}
    assert len(set(addresses.values())) == 3
    for n in names:
        assert addresses[n] == hostname(tor.service_root / n)
        assert first["services"][n]["changed"] is True
        assert first["services"][n]["torrc_dropin"] == str(tor.torrc_dir / f"nodefleet-{n}.conf")
    assert "onion_address" not in first  # batch form returns per-service results only

    second = run(tor, **batch)
    assert second["changed"] is False and second["reloaded"] is False
    assert {n: second["services"][n]["onion_address"] for n in names} == addresses
    assert tor.reload_count() == reloads + 1

    # one service removed, one port added: still one reload, others untouched
    batch["services"][0]["ports"] = [*P2P, {"port": 80, "target": "127.0.0.1:8080"}]
    batch["services"][2] = {"name": "n3", "state": "absent"}
    third = run(tor, "--diff", **batch)
    assert third["reloaded"] is True
    assert settle_reloads(tor, reloads + 2) == reloads + 2
    assert [third["services"][n]["changed"] for n in names] == [True, False, True]
    assert third["services"]["n1"]["onion_address"] == addresses["n1"]
    assert third["services"]["n2"]["onion_address"] == addresses["n2"]
    assert not (tor.torrc_dir / "nodefleet-n3.conf").exists()
    assert (tor.service_root / "n3" / "hs_ed25519_secret_key").exists()
    assert len(third["diff"]) == 2


def test_absent_removes_the_dropin_and_keeps_the_keys(tor):
    svc_dir = tor.service_root / "a"
    address = run(tor, **service(tor, "a"))["onion_address"]
    key = key_b64(svc_dir)
    gone = run(tor, "--diff", name="a", state="absent")
    assert gone["changed"] is True and gone["reloaded"] is True
    assert gone["onion_address"] is None
    assert gone["diff"]["after"] == "" and "HiddenServiceDir" in gone["diff"]["before"]
    assert not (tor.torrc_dir / "nodefleet-a.conf").exists()
    assert key_b64(svc_dir) == key and hostname(svc_dir) == address

    again = run(tor, name="a", state="absent")
    assert again["changed"] is False and again["reloaded"] is False

    back = run(tor, **service(tor, "a"))
    assert back["onion_address"] == address


def test_check_mode_reports_changes_and_touches_nothing(tor):
    before_files = files_under(tor.torrc_dir, tor.service_root)
    reloads = tor.reload_count()
    planned = run(tor, "--check", "--diff", **service(tor, "a"))
    assert planned["changed"] is True and planned["reloaded"] is False
    assert planned["onion_address"] is None
    assert "HiddenServicePort 8333 127.0.0.1:8334" in planned["diff"]["after"]
    assert files_under(tor.torrc_dir, tor.service_root) == before_files
    assert tor.reload_count() == reloads

    address = run(tor, **service(tor, "a"))["onion_address"]
    reloads = settle_reloads(tor, reloads + 1)
    snapshot = files_under(tor.torrc_dir, tor.service_root)
    for options in (
        {"name": "a", "state": "absent", "purge": True},
        service(tor, "a", ports=[{"port": 8333, "target": "127.0.0.1:9999"}]),
    ):
        result = run(tor, "--check", **options)
        assert result["changed"] is True and result["reloaded"] is False
        assert files_under(tor.torrc_dir, tor.service_root) == snapshot
    assert "127.0.0.1:8334" in (tor.torrc_dir / "nodefleet-a.conf").read_text()
    unchanged = run(tor, "--check", **service(tor, "a"))
    assert unchanged["changed"] is False and unchanged["onion_address"] == address
    assert tor.reload_count() == reloads


def test_verbose_output_never_contains_key_material(tor, tmp_path):
    run(tor, **service(tor, "a"))
    svc_dir = tor.service_root / "a"
    raw = (svc_dir / "hs_ed25519_secret_key").read_bytes()
    b64 = base64.b64encode(raw).decode()
    run(tor, name="a", state="absent", purge=True)
    wrong_raw = raw[:32] + bytes(reversed(raw[32:]))  # a different, well-formed key
    wrong = base64.b64encode(wrong_raw).decode()
    secrets = [b64, raw.hex(), raw[32:].hex(), base64.b64encode(raw[32:]).decode(), b64[20:60]]
    secrets += [wrong, wrong_raw.hex(), wrong[20:60]]

    outputs = []
    for options, flags, rc in (
        (service(tor, "a", secret_key=b64), ("-vvvv", "--diff"), 0),  # restore
        (service(tor, "a", secret_key=b64), ("-vvvv", "--diff", "--check"), 0),  # no-op, check mode
        ({"services": [service(tor, "a", secret_key=b64)]}, ("-vvvv", "--diff"), 0),  # batch form
        (service(tor, "a", secret_key=wrong), ("-vvvv", "--diff"), 2),  # refused different key
    ):
        proc = playbook(tmp_path, {**tor.module_args(), **options}, *flags)
        assert proc.returncode == rc, proc.stdout[-3000:]
        outputs.append(proc.stdout + proc.stderr)
    assert hostname(svc_dir) and key_b64(svc_dir) == b64
    text = "\n".join(outputs)
    assert "would change its onion address" in text  # the failure really happened
    assert text.count("HiddenServiceDir") >= 1  # the diff really was printed
    for secret in secrets:
        assert secret not in text


def test_tor_rejecting_the_config_restores_the_previous_dropins(tor):
    a_dropin = tor.torrc_dir / "nodefleet-a.conf"
    address = run(tor, **service(tor, "a"))["onion_address"]
    previous = a_dropin.read_text()
    reloads = settle_reloads(tor, tor.reload_count())
    # Someone else's drop-in already serves the directory the new service "b" would use.
    foreign = tor.torrc_dir / "zz-foreign.conf"
    b_dir = tor.service_root / "b"
    foreign.write_text(f"HiddenServiceDir {b_dir}\nHiddenServicePort 9 127.0.0.1:9\n")
    batch = {
        "services": [
            service(tor, "a", ports=[{"port": 8333, "target": "127.0.0.1:7777"}]),
            service(tor, "b"),
        ]
    }
    failed, _ = ansible({**tor.module_args(), **batch})
    assert failed["failed"] is True
    assert failed["msg"].startswith("torrc_file: tor --verify-config rejected")
    assert "Another hidden service is already configured" in failed["msg"]
    assert a_dropin.read_text() == previous
    assert not (tor.torrc_dir / "nodefleet-b.conf").exists()
    assert not b_dir.exists()
    assert not [p for p in tor.torrc_dir.iterdir() if p.name.startswith(".")]  # no temp files left
    assert tor.reload_count() == reloads
    assert hostname(tor.service_root / "a") == address


def test_tor_not_running_fails_naming_tor_pid_file_before_writing(tor):
    tor.stop()
    failed, _ = ansible({**tor.module_args(), **service(tor, "a")})
    assert failed["failed"] is True and failed["msg"].startswith("tor_pid_file: ")
    assert list(tor.torrc_dir.iterdir()) == [] and list(tor.service_root.iterdir()) == []


def _without_include(tor):
    plain = tor.base / "torrc-no-include"
    plain.write_text("".join(line for line in tor.torrc_file.read_text().splitlines(True) if "%include" not in line))
    return {"torrc_file": str(plain)}


GOOD_KEY = base64.b64encode(b"== ed25519v1-secret: type0 ==\x00\x00\x00" + bytes(range(64))).decode()


@pytest.mark.parametrize(
    "options, option_named",
    [
        ({"name": "../x"}, "name"),
        ({"service_dir": "relative/x"}, "service_dir"),
        ({"service_dir": "/tmp/../etc/x"}, "service_dir"),
        ({"ports": [{"port": 0, "target": "127.0.0.1:8334"}]}, "ports[0].port"),
        ({"ports": [{"port": 70000, "target": "127.0.0.1:8334"}]}, "ports[0].port"),
        ({"ports": [*P2P, {"port": 8333, "target": "127.0.0.1:9"}]}, "ports[1].port"),
        ({"ports": [{"port": 8333, "target": "nohost"}]}, "ports[0].target"),
        ({"secret_key": "this is not base64!"}, "secret_key"),
        (
            {"secret_key": base64.b64encode(b"== ed25519v1-public: type0 ==\x00\x00\x00" + bytes(64)).decode()},
            "secret_key",
        ),
        ({"secret_key": GOOD_KEY[:-8]}, "secret_key"),
        ("no-include", "torrc_file"),
        ({"services": [{"name": "ok", "ports": P2P}, {"name": "ok", "ports": P2P}]}, "services[1].name"),
    ],
    ids=[
        "name-dotdot",
        "dir-relative",
        "dir-dotdot",
        "port-0",
        "port-70000",
        "port-duplicate",
        "target-nohost",
        "key-not-base64",
        "key-wrong-header",
        "key-wrong-length",
        "torrc-without-include",
        "batch-duplicate-name",
    ],
)
def test_bad_input_fails_naming_the_option_and_leaves_nothing(tor, options, option_named):
    args = {**tor.module_args(), **service(tor, "bad")}
    if options == "no-include":
        args.update(_without_include(tor))
    elif "services" in options:
        args = {
            **tor.module_args(),
            "services": [{**s, "service_dir": str(tor.service_root / s["name"])} for s in options["services"]],
        }
    else:
        args.update(options)
    reloads = tor.reload_count()
    result, proc = ansible(args)
    assert result["failed"] is True
    assert result["msg"].startswith(option_named + ": "), result["msg"]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert list(tor.torrc_dir.iterdir()) == []
    assert list(tor.service_root.iterdir()) == []
    assert tor.reload_count() == reloads

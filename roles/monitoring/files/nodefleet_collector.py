# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""nodefleet node collector: one bitcoind_info run, rendered as the node_exporter textfile.

Installed by the nodefleet.bitcoin.monitoring role and run by ``nodefleet-collector.timer``
(every ``monitoring_collector_interval`` seconds). No Ansible on the node: the collection's
module_utils are installed next to this file (``ansible_collections/nodefleet/bitcoin/
plugins/module_utils/``) and imported from there, so the collector runs the same code as the
``bitcoind_info`` module (``instance_info``) and the status playbook (``metrics.render_textfile``).

    nodefleet_collector.py [--config /etc/nodefleet/collector.json] [--print]

The config (root-only, 0600: it holds RPC passwords) is JSON::

    {"host": "<inventory hostname>", "textfile": "/var/lib/prometheus/node-exporter/nodefleet_bitcoind.prom",
     "options": {<bitcoind_info options: instances, timeout, supervisor_url, conf_dir, ...>}}

The textfile is replaced atomically (a temp file in the same directory, then a rename inside
that directory's descriptor; module_utils/safe_fs), root-owned 0644, and never written through a
symlink anywhere in its path: the directory may belong to the prometheus user. Invalid options
still write a textfile (``nodefleet_bitcoind_status_ok 0`` and the collector timestamp), so a
broken collector shows in Prometheus, and exit 1. Nothing secret is printed.
Exit codes: 0 written, 1 options invalid (textfile written), 2 config unreadable or textfile
not written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from ansible_collections.nodefleet.bitcoin.plugins.module_utils import (  # noqa: E402
    instance_info,
    metrics,
    safe_fs,
)
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError  # noqa: E402

DEFAULT_CONFIG = "/etc/nodefleet/collector.json"
TEXTFILE_MODE = 0o644


class ConfigError(Exception):
    """The config file is missing, unreadable or not the expected shape."""


def load_config(path: str) -> dict:
    """Read and check the config's shape (host, textfile, options); the options are checked later."""
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: must hold a JSON object")
    if not isinstance(config.get("host"), str) or not config["host"]:
        raise ConfigError(f"{path}: host must be a non-empty string")
    textfile = config.get("textfile")
    if not isinstance(textfile, str) or not textfile.startswith("/") or not textfile.endswith(".prom"):
        raise ConfigError(f"{path}: textfile must be an absolute path ending in .prom")
    if not isinstance(config.get("options", {}), dict):
        raise ConfigError(f"{path}: options must be an object")
    return config


def collect(config: dict, clock=time.time) -> tuple:
    """(textfile text, error message or "") for one run; never raises for bad options."""
    params = json.loads(json.dumps(config.get("options") or {}))  # a copy: validate() adds to it
    error = ""
    try:
        specs = instance_info.validate(params)
    except ValidationError as exc:
        error = str(exc)
    except (TypeError, KeyError, AttributeError) as exc:
        error = f"options: malformed ({exc.__class__.__name__})"
    info = {"failed": True, "msg": error} if error else instance_info.collect(params, specs)
    return metrics.render_textfile(config["host"], info, timestamp=round(clock(), 3)), error


def write_textfile(path: str, text: str) -> None:
    """Atomic, root-owned 0644, no symlink anywhere in the path (safe_fs)."""
    owner = 0 if os.geteuid() == 0 else None  # root on a node; the tests may run unprivileged
    safe_fs.write_file(path, text, uid=owner, gid=owner, mode=TEXTFILE_MODE)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write the nodefleet node_exporter textfile once.")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--print", action="store_true", help="print the textfile instead of writing it")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"nodefleet-collector: {exc}", file=sys.stderr)
        return 2
    text, error = collect(config)
    if args.print:
        sys.stdout.write(text)
    else:
        try:
            write_textfile(config["textfile"], text)
        except (OSError, safe_fs.UnsafePath) as exc:
            reason = str(exc) if isinstance(exc, safe_fs.UnsafePath) else (exc.strerror or str(exc))
            print(f"nodefleet-collector: cannot write {config['textfile']}: {reason}", file=sys.stderr)
            return 2
    if error:
        print(f"nodefleet-collector: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

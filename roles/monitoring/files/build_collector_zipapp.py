# Copyright (c) nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Builds the node collector as one Python zip application, on the controller.

    python build_collector_zipapp.py --collector nodefleet_collector.py \
        --module-utils-dir plugins/module_utils --name safe_fs.py --name ... [--out-dir DIR]

The archive holds ``__main__.py`` (the collector) and the collection's module_utils it imports
under ``ansible_collections/nodefleet/bitcoin/plugins/module_utils/`` (each package with an empty
``__init__.py``); ``python3 nodefleet_collector.pyz --config ...`` runs it through the standard
library's zipimport. The monitoring role copies this ONE file to each node instead of one file per
module (two module executions per host on a no-op converge instead of 25).

The bytes depend only on the inputs (stored, not deflated, so no zlib version enters; fixed
timestamps and modes; sorted entries), so an unchanged collector copies as unchanged on every
controller. The archive is written into a fresh private temporary directory (mkdtemp, 0700) and
its path printed on stdout as JSON: {"path": ..., "sha256": ...}.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile

PACKAGE = "ansible_collections/nodefleet/bitcoin/plugins/module_utils"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
ARCHIVE_NAME = "nodefleet_collector.pyz"


def _entry(name: str, data: bytes) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o100644 << 16
    info.create_system = 3  # unix, whatever the controller
    return info, data


def build(collector: str, module_utils_dir: str, names: list[str]) -> bytes:
    """The archive's bytes. Raises ValueError naming a missing or unsafe input."""
    if not names:
        raise ValueError("--name: at least one module_utils file is needed")
    for name in names:
        if os.path.basename(name) != name or not name.endswith(".py"):
            raise ValueError(f"--name {name}: a plain module file name (x.py) is needed")
    entries = {}
    with open(collector, "rb") as handle:
        entries["__main__.py"] = handle.read()
    parts = PACKAGE.split("/")
    for depth in range(1, len(parts) + 1):
        entries["/".join(parts[:depth]) + "/__init__.py"] = b""
    for name in names:
        path = os.path.join(module_utils_dir, name)
        if not os.path.isfile(path):
            raise ValueError(f"--name {name}: no such module_utils file {path}")
        with open(path, "rb") as handle:
            entries[f"{PACKAGE}/{name}"] = handle.read()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(entries):
            info, data = _entry(name, entries[name])
            archive.writestr(info, data)
    # A zip application may start with a shebang line; none here: the unit names the python.
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collector", required=True)
    parser.add_argument("--module-utils-dir", required=True)
    parser.add_argument("--name", action="append", default=[])
    parser.add_argument("--out-dir", help="existing directory to write into (default: a new mkdtemp)")
    args = parser.parse_args(argv)
    try:
        data = build(args.collector, args.module_utils_dir, args.name)
    except (OSError, ValueError) as exc:
        print(f"build_collector_zipapp: {exc}", file=sys.stderr)
        return 2
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="nodefleet-collector-")
    path = os.path.join(out_dir, ARCHIVE_NAME)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".pyz-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(json.dumps({"path": path, "dir": out_dir, "sha256": hashlib.sha256(data).hexdigest()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

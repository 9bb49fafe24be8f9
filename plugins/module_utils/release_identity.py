# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a running bitcoind of a given release reports (pure, no I/O).

``expected_identity(impl, version)`` turns a release version as ``bitcoind_releases`` names it
(the archive's version: ``28.0``, ``28.99.0``, ``30.0rc1``, ``29.1.knots20250903``,
``29.1.knots20250903-garbageman1``) into what ``getnetworkinfo`` of that release answers:

- ``version``: ``MAJOR * 10000 + MINOR * 100 + BUILD`` (Core's CLIENT_VERSION; an ``rcN``
  suffix does not change it);
- ``subversion``: the user agent, ``/Satoshi:MAJOR.MINOR.BUILD/`` for Core (no rc suffix, as
  Core's FormatSubVersion), plus ``Knots:YYYYMMDD/`` for Knots and Garbageman, plus
  ``Garbageman:N/`` for Garbageman.

A version this does not recognise gives ``{}`` (nothing to expect: the health gate then checks
the chain only). ``release_dir_version(impl, target)`` reads the version back out of an install
dir / link target ``<impl>-<version>`` (None when it is not one).
"""

from __future__ import annotations

import re

IMPLS = ("core", "knots", "garbageman")
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:rc\d+)?(?:\.knots(\d{8}))?(?:-garbageman(\d+))?\Z")


def expected_identity(impl: str, version) -> dict:
    """{version, subversion} a daemon of this release reports, or {} when unknown."""
    if impl not in IMPLS or not isinstance(version, str):
        return {}
    match = _VERSION_RE.match(version)
    if not match:
        return {}
    major, minor, build = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    knots_date, gm_rev = match.group(4), match.group(5)
    if impl == "core" and (knots_date or gm_rev):
        return {}
    if impl == "knots" and (not knots_date or gm_rev):
        return {}
    if impl == "garbageman" and not (knots_date and gm_rev):
        return {}
    subversion = "/Satoshi:%d.%d.%d/" % (major, minor, build)
    if knots_date:
        subversion += "Knots:%s/" % knots_date
    if gm_rev:
        subversion += "Garbageman:%s/" % gm_rev
    return {"version": major * 10000 + minor * 100 + build, "subversion": subversion}


def release_dir_version(impl: str, target) -> str | None:
    """``<impl>-<version>`` (a link target or install dir name, maybe a path) -> version."""
    if not isinstance(target, str) or not target:
        return None
    name = target.rstrip("/").rsplit("/", 1)[-1]
    prefix = impl + "-"
    if not name.startswith(prefix) or len(name) == len(prefix):
        return None
    return name[len(prefix) :]

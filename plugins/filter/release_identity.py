# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``version | nodefleet.bitcoin.release_expect(impl)``: what a daemon of that release reports.

Logic in module_utils/release_identity.py; documentation in release_expect.yml.
"""

from __future__ import annotations

from ansible_collections.nodefleet.bitcoin.plugins.module_utils.release_identity import (
    expected_identity,
    release_dir_version,
)


def release_expect(version, impl):
    return expected_identity(impl, version)


def release_version(target, impl):
    return release_dir_version(impl, target)


class FilterModule:
    def filters(self):
        return {"release_expect": release_expect, "release_version": release_version}

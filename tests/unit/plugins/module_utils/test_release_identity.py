# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the rolling upgrade's gate expects from a release (module_utils/release_identity)."""

from __future__ import annotations

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.filter.release_identity import FilterModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.release_identity import (
    expected_identity,
    release_dir_version,
)


@pytest.mark.parametrize(
    ("impl", "version", "want"),
    [
        ("core", "28.99.0", {"version": 289900, "subversion": "/Satoshi:28.99.0/"}),
        ("core", "30.0", {"version": 300000, "subversion": "/Satoshi:30.0.0/"}),
        ("core", "30.0rc1", {"version": 300000, "subversion": "/Satoshi:30.0.0/"}),
        ("knots", "29.1.knots20250903", {"version": 290100, "subversion": "/Satoshi:29.1.0/Knots:20250903/"}),
        (
            "garbageman",
            "29.2.knots20251101-garbageman1",
            {"version": 290200, "subversion": "/Satoshi:29.2.0/Knots:20251101/Garbageman:1/"},
        ),
    ],
)
def test_expected_identity_of_known_versions(impl, version, want):
    assert expected_identity(impl, version) == want


@pytest.mark.parametrize(
    ("impl", "version"),
    [
        ("core", "29.1.knots20250903"),  # a knots version for core
        ("knots", "29.1"),  # knots versions carry the date
        ("knots", "29.1.knots20250903-garbageman1"),
        ("garbageman", "29.1.knots20250903"),
        ("core", "latest"),
        ("core", "28.0\n"),
        ("other", "28.0"),
        ("core", None),
    ],
)
def test_unrecognised_versions_expect_nothing(impl, version):
    assert expected_identity(impl, version) == {}


def test_release_dir_version():
    assert release_dir_version("knots", "knots-29.1.knots20250903") == "29.1.knots20250903"
    assert release_dir_version("knots", "/opt/bitcoin/knots-29.1.knots20250903/") == "29.1.knots20250903"
    assert release_dir_version("core", "knots-29.1") is None
    assert release_dir_version("core", "core-") is None
    assert release_dir_version("core", "") is None
    assert release_dir_version("core", None) is None


def test_filters_are_registered():
    filters = FilterModule().filters()
    assert filters["release_expect"]("28.99.0", "core") == {"version": 289900, "subversion": "/Satoshi:28.99.0/"}
    assert filters["release_version"]("core-28.99.0", "core") == "28.99.0"

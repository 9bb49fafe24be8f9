# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stand-in daemon reports the identity the rolling upgrade's gate expects from a release
(module_utils/release_identity). Here, not under tests/unit/plugins: it reads tests/standin, which is
not part of the built collection that ansible-test units runs in."""

from __future__ import annotations

import importlib.util
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.release_identity import expected_identity

STANDIN = Path(__file__).resolve().parents[2] / "standin" / "bitcoind"


def standin_identity(impl, version):
    """The stand-in daemon's own answer (its identity())."""
    loader = SourceFileLoader("nf_standin_ident", str(STANDIN))
    spec = importlib.util.spec_from_loader("nf_standin_ident", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    ident = mod.identity(impl, version)
    return {"version": ident["version"], "subversion": ident["subversion"]}


@pytest.mark.parametrize(
    ("impl", "version"),
    [
        ("core", "30.0"),
        ("knots", "29.1.knots20250903"),
        ("knots", "29.2.knots20251101"),
        ("garbageman", "29.1.knots20250903-garbageman1"),
        ("garbageman", "29.2.knots20251103-garbageman1"),
    ],
)
def test_the_stand_in_reports_what_is_expected(impl, version):
    assert expected_identity(impl, version) == standin_identity(impl, version)

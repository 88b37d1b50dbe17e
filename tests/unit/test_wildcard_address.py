"""The bind-address check resolves addresses: every spelling of the wildcard is caught, real addresses pass."""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.test import wildcard_address as plugin
from ansible_collections.stateserver.ha.plugins.test.wildcard_address import wildcard_address


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "0", "0x0", "0.0", "::0", "0:0:0:0:0:0:0:0", "[::]",
                                     "::ffff:0.0.0.0", "", "  ", None])
def test_every_spelling_of_the_wildcard_is_caught(address):
    assert wildcard_address(address) is True


@pytest.mark.parametrize("address", ["127.0.0.1", "10.178.1.11", "::1", "[2001:db8::1]", "localhost",
                                     "no-such-host.invalid"])
def test_real_addresses_and_unresolvable_names_pass(address):
    assert wildcard_address(address) is False


def test_the_plugin_exports_the_test():
    assert plugin.TestModule().tests()["wildcard_address"] is wildcard_address

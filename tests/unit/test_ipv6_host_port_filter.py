"""The host_port filter: how playbooks and roles join a host and a port, IPv6 literals in brackets (issue 12)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.stateserver.ha.plugins.filter import host_port as plugin
from ansible_collections.stateserver.ha.plugins.filter.host_port import host_port
from ansible_collections.stateserver.ha.plugins.module_utils._records import normalise_address


@pytest.mark.parametrize(("host", "port", "expected"), [
    ("::1", 37017, "[::1]:37017"),
    ("2001:db8::11", 17070, "[2001:db8::11]:17070"),
    ("[::1]", 37017, "[::1]:37017"),
    (" ::1 ", "37017", "[::1]:37017"),
    ("10.0.0.5", 37017, "10.0.0.5:37017"),
    ("sm1.example", 37017, "sm1.example:37017"),
])
def test_hosts_and_ports_are_joined_as_the_modules_read_them(host, port, expected):
    assert host_port(host, port) == expected
    assert normalise_address(host_port(host, port)) == expected


def test_what_is_not_a_host_is_left_for_the_modules_to_refuse():
    # The one validation layer is the modules': the filter neither guesses nor hides what was given.
    assert host_port("a:b:c", 1) == "a:b:c:1"
    assert host_port("not a host!!", 1) == "not a host!!:1"


@pytest.mark.parametrize("port", ["x", True, None, -1, "5.0"])
def test_a_port_that_is_not_a_whole_number_is_refused(port):
    with pytest.raises(AnsibleFilterError, match="whole number"):
        host_port("h", port)


def test_the_plugin_exports_the_filter():
    assert plugin.FilterModule().filters()["host_port"] is host_port

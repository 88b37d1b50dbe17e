"""The shared connection options (_args.py): what Ansible's types let through is range- and syntax-checked here."""

from __future__ import annotations

import re

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils import _args


def params(**changes) -> dict:
    return {**_args.connection_defaults(), **changes}


@pytest.mark.parametrize("text, expected", [
    ("a", "a:37017"),
    (" sm-1.lab ", "sm-1.lab:37017"),
    ("10.0.0.1:1", "10.0.0.1:1"),
    ("h:65535", "h:65535"),
    ("::1", "[::1]:37017"),
    ("[::1]", "[::1]:37017"),
    ("[fe80::1]:5", "[fe80::1]:5"),
    ("[::1]:37017", "[::1]:37017"),
    ("under_score", "under_score:37017"),
])
def test_host_port_completes_and_keeps_valid_addresses(text, expected):
    assert _args.host_port(text, 37017) == expected


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    (" ", "empty"),
    (None, "must be a 'host:port' string"),
    ("not a host!!", "not a host name"),
    ("h:99999", "1 to 65535"),
    ("h:0", "1 to 65535"),
    ("h:", "1 to 65535"),
    ("h:x", "1 to 65535"),
    ("h:٥", "1 to 65535"),
    ("a:b:c", "more than one ':'"),
    ("::1:37017", "write [::1]:37017"),
    ("[nope]:1", "not an IPv6"),
    ("[::1]x", "[address]:port"),
    ("-bad", "not a host name"),
])
def test_host_port_refuses_what_is_not_an_address(text, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)) as err:
        _args.host_port(text, 37017, "seeds[2]")
    assert "seeds[2]" in str(err.value)


@pytest.mark.parametrize("changes, fragment", [
    ({"port": 0}, "port must be from 1 to 65535, got 0"),
    ({"port": 70000}, "port must be from 1 to 65535, got 70000"),
    ({"port": -1}, "port must be"),
    ({"server_selection_timeout": -1.0}, "server_selection_timeout must be"),
    ({"server_selection_timeout": 0.0}, "server_selection_timeout must be"),
    ({"server_selection_timeout": float("nan")}, "server_selection_timeout must be"),
    ({"server_selection_timeout": float("inf")}, "server_selection_timeout must be"),
    ({"server_selection_timeout": 1e300}, "server_selection_timeout must be"),
    ({"replica_set": ""}, "replica_set must be"),
    ({"replica_set": "a b"}, "replica_set must be"),
    ({"seeds": []}, "seeds is empty"),
    ({"seeds": ["ok", "h:99999"]}, "seeds[1]: 'h:99999' is not an address"),
])
def test_check_connection_names_the_option_and_what_is_valid(changes, fragment):
    problem = _args.check_connection(params(**changes))
    assert problem is not None and fragment in problem


def test_check_connection_accepts_the_defaults_and_ipv6_seeds():
    assert _args.check_connection(params()) is None
    assert _args.check_connection(params(seeds=["::1", "[::1]:27017", "h"], port=1, server_selection_timeout=0.5)) \
        is None


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "5", True, None, 86401])
def test_check_seconds_refuses_unusable_timeouts(value):
    assert _args.check_seconds(value, "timeout") is not None


def test_check_seconds_accepts_positive_finite_seconds():
    assert _args.check_seconds(0.001, "timeout") is None
    assert _args.check_seconds(300, "timeout") is None

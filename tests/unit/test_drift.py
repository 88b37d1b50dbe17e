"""What the state_machine role's one comparison calls a difference (_drift.py), without a host."""

from __future__ import annotations

from ansible_collections.stateserver.ha.plugins.module_utils._drift import (
    drift,
    file_differs,
    parse_systemctl_show,
    unit_name,
)

CONF = {"path": "/etc/mongod.conf", "owner": "root", "group": "mongodb", "mode": "0640", "checksum": "ab" * 20}
DBPATH = {"path": "/var/lib/mongodb", "owner": "mongodb", "group": "mongodb", "mode": "0750"}
BINARY = {"path": "/usr/bin/mongod", "owner": None, "group": None, "mode": None, "checksum": None}
MATCHING = {
    "/etc/mongod.conf": {"owner": "root", "group": "mongodb", "mode": "0640", "checksum": "ab" * 20},
    "/var/lib/mongodb": {"owner": "mongodb", "group": "mongodb", "mode": "0750"},
    "/usr/bin/mongod": {"owner": "root", "group": "root", "mode": "0755"},
}
SHOW_OK = "ActiveState=active\nUnitFileState=enabled\n\nActiveState=active\nUnitFileState=enabled\n"


def test_a_matching_host_has_no_drift():
    states = parse_systemctl_show(["mongod", "stateserver-api"], SHOW_OK)
    assert drift([CONF, DBPATH, BINARY], MATCHING, ["mongod", "stateserver-api"], states) == []


def test_each_attribute_and_a_missing_path_is_a_difference_and_unasked_ones_are_not():
    for key, value in (("owner", "mongodb"), ("group", "root"), ("mode", "0644"), ("checksum", "cd" * 20)):
        assert file_differs(CONF, {**MATCHING["/etc/mongod.conf"], key: value}), key
    assert file_differs(CONF, None)
    # A directory has no checksum to compare; the binary is asked to exist only.
    assert not file_differs(DBPATH, {**MATCHING["/var/lib/mongodb"], "checksum": None})
    assert not file_differs(BINARY, {"owner": "mongodb", "group": "staff", "mode": "0700"})
    assert file_differs(BINARY, None)


def test_differences_are_named_in_order_paths_first_then_services():
    observed = {**MATCHING, "/etc/mongod.conf": {**MATCHING["/etc/mongod.conf"], "mode": "0644"},
                "/usr/bin/mongod": None}
    show = "ActiveState=inactive\nUnitFileState=enabled\n\nActiveState=active\nUnitFileState=disabled\n"
    states = parse_systemctl_show(["mongod", "stateserver-api"], show)
    assert drift([CONF, DBPATH, BINARY], observed, ["mongod", "stateserver-api"], states) == [
        "/etc/mongod.conf", "/usr/bin/mongod", "service mongod", "service stateserver-api"]


def test_systemctl_show_blocks_are_read_in_the_order_asked_and_a_missing_block_is_a_difference():
    show = "UnitFileState=enabled\nActiveState=active\n\nActiveState=inactive\nUnitFileState=\n"
    states = parse_systemctl_show(["a", "b", "c"], show)
    assert states == {"a": {"ActiveState": "active", "UnitFileState": "enabled"},
                      "b": {"ActiveState": "inactive", "UnitFileState": ""}, "c": {}}
    assert drift([], {}, ["a", "b", "c"], states) == ["service b", "service c"]
    assert drift([], {}, ["a"], parse_systemctl_show(["a"], "")) == ["service a"]


def test_a_bare_service_name_becomes_its_unit():
    assert unit_name("mongod") == "mongod.service"
    assert unit_name("stateserver-api.service") == "stateserver-api.service"

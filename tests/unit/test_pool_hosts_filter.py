"""The pool_hosts filter: how the playbooks describe the pool from the inventory, in one expression."""

from __future__ import annotations

from ansible_collections.stateserver.ha.plugins.filter import pool_hosts as plugin
from ansible_collections.stateserver.ha.plugins.filter.pool_hosts import pool_hosts

HOSTVARS = {
    "sm1": {"ansible_host": "10.0.0.11", "mongod_bind_address": "10.1.0.11", "__ha_ping": {"ping": "pong"}},
    "sm2": {"ansible_host": "::1", "__ha_ping": {"unreachable": True, "msg": "no route"}},
    "sm3": {"__ha_ping": {"skipped": True}},
    "sm4": {"ansible_host": "sm4.example"},
}


def test_each_host_gets_its_bind_address_else_its_host_else_its_name_in_inventory_order():
    assert pool_hosts(["sm3", "sm1", "sm2", "sm4"], HOSTVARS, 37017, 17070) == [
        {"name": "sm3", "mongo_address": "sm3:37017", "api_address": "sm3:17070"},
        {"name": "sm1", "mongo_address": "10.1.0.11:37017", "api_address": "10.1.0.11:17070"},
        {"name": "sm2", "mongo_address": "[::1]:37017", "api_address": "[::1]:17070"},
        {"name": "sm4", "mongo_address": "sm4.example:37017", "api_address": "sm4.example:17070"},
    ]


def test_only_a_host_whose_ping_found_it_unreachable_is_unreachable():
    # sm3 was not pinged (it answered an earlier read), sm4 has no result yet: both count as reachable.
    entries = pool_hosts(["sm1", "sm2", "sm3", "sm4"], HOSTVARS, "37017", "17070", reachability=True)
    assert [(e["name"], e["reachable"]) for e in entries] == [("sm1", True), ("sm2", False), ("sm3", True),
                                                              ("sm4", True)]


def test_no_hosts_is_an_empty_pool_and_the_plugin_exports_the_filter():
    assert pool_hosts([], HOSTVARS, 37017, 17070) == []
    assert pool_hosts(None, HOSTVARS, 37017, 17070) == []
    assert plugin.FilterModule().filters()["pool_hosts"] is pool_hosts

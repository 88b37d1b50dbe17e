# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: pool_hosts
short_description: Describe the hosts that may be state machines, with the addresses their services listen on
version_added: 0.3.0
description:
  - Returns one entry per host name, in the order given, with the addresses its mongod and its API server listen
    on. The address is the host's C(mongod_bind_address) when set, else its C(ansible_host), else its inventory
    name; an IPv6 literal is written in brackets (V([::1]:37017)), as M(stateserver.ha.ensure_availability) and the
    other modules take it.
  - With O(reachability), each entry also says whether the host answered its connection, read from the result
    C(playbooks/internal/reachable.yml) registers on it (C(__ha_ping)); a host with no such result counts as
    reachable (it was not asked because it had already answered).
  - Nothing is checked here; the modules validate every address and name they are given.
author:
  - stateserver.ha developers (@stateserver)
options:
  _input:
    description: The host names, typically C(groups['state_machines']).
    type: list
    elements: str
    required: true
  hostvars:
    description: The play's C(hostvars).
    type: dict
    required: true
  port:
    description: mongod's port.
    type: int
    required: true
  api_port:
    description: The API server's port.
    type: int
    required: true
  reachability:
    description: Add C(reachable) to each entry.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: The pool, as the modules take it
  ansible.builtin.set_fact:
    pool: "{{ groups['state_machines'] | stateserver.ha.pool_hosts(hostvars, 37017, 17070) }}"
  # [{"name": "sm1", "mongo_address": "10.0.0.11:37017", "api_address": "10.0.0.11:17070"}, ...]
"""

RETURN = r"""
_value:
  description: One entry per host, C(name), C(mongo_address), C(api_address) and, with O(reachability), C(reachable).
  type: list
  elements: dict
"""

from ansible_collections.stateserver.ha.plugins.filter.host_port import host_port


def pool_hosts(names, hostvars, port, api_port, reachability=False) -> list[dict]:
    entries = []
    for name in names or []:
        hv = hostvars[name]
        address = hv["mongod_bind_address"] if "mongod_bind_address" in hv else hv.get("ansible_host", name)
        entry = {"name": name, "mongo_address": host_port(address, port), "api_address": host_port(address, api_port)}
        if reachability:
            ping = hv.get("__ha_ping") or {}
            entry["reachable"] = not (isinstance(ping, dict) and ping.get("unreachable", False))
        entries.append(entry)
    return entries


class FilterModule:
    def filters(self):
        return {"pool_hosts": pool_hosts}

# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: host_port
short_description: Join a host and a port into the host:port string MongoDB and the API server use
version_added: 0.2.0
description:
  - Returns V(host:port). An IPv6 literal is written in brackets, V([::1]:37017), the only form MongoDB, pymongo and
    the collection's modules accept (they refuse V(::1:37017)).
  - A host already in brackets keeps them. Host names and IPv4 addresses are joined as they are, without being
    checked; the modules validate every address they are given and say what is wrong with it.
author:
  - stateserver.ha developers (@stateserver)
options:
  _input:
    description: The host (a name, an IPv4 address, or an IPv6 address with or without brackets), without a port.
    type: str
    required: true
  port:
    description: The port.
    type: int
    required: true
"""

EXAMPLES = r"""
- name: The address a member is known by in the replica set config
  ansible.builtin.set_fact:
    member_host: "{{ mongod_bind_address | stateserver.ha.host_port(mongod_port) }}"
  # 10.0.0.5 -> 10.0.0.5:37017, ::1 -> [::1]:37017, sm1.example -> sm1.example:37017
"""

RETURN = r"""
_value:
  description: The address as V(host:port), with an IPv6 host in brackets.
  type: str
"""

import ipaddress

from ansible.errors import AnsibleFilterError


def host_port(host, port) -> str:
    text = str(host if host is not None else "").strip()
    if isinstance(port, bool) or not str(port).strip().isdigit():
        raise AnsibleFilterError(f"host_port: the port must be a whole number, got {port!r}")
    if ":" in text and not text.startswith("["):
        try:
            ipaddress.IPv6Address(text.partition("%")[0])
        except ValueError:
            # Not an IPv6 literal (say, a host:port already): left for the modules to refuse with their message.
            return f"{text}:{int(port)}"
        text = f"[{text}]"
    return f"{text}:{int(port)}"


class FilterModule:
    def filters(self):
        return {"host_port": host_port}

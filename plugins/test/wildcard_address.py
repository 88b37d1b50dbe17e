# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: wildcard_address
short_description: Whether an address makes a listener bind every interface
version_added: 0.2.0
description:
  - True when the address resolves to the unspecified address (C(0.0.0.0), C(::) or C(::ffff:0.0.0.0)) in any
    spelling a resolver accepts, such as C(0), C(0x0), C(::0) or C(0:0:0:0:0:0:0:0), or is empty.
  - The address is resolved as a listener resolves it, so comparing strings cannot be fooled. A name that does not
    resolve on the controller is not known to be a wildcard and gives false.
author:
  - stateserver.ha developers (@stateserver)
options:
  _input:
    description: The address (no port).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Refuse a bind address that listens everywhere
  ansible.builtin.assert:
    that: mongod_bind_address is not stateserver.ha.wildcard_address
"""

RETURN = r"""
_value:
  description: Whether the address binds every interface.
  type: bool
"""

import ipaddress
import socket


def wildcard_address(value) -> bool:
    host = str(value if value is not None else "").strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].partition("%")[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if ip.is_unspecified or (mapped is not None and mapped.is_unspecified):
            return True
    return False


class TestModule:
    def tests(self):
        return {"wildcard_address": wildcard_address}

# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The connection options every module of the collection shares (documented in doc_fragments/connection.py).

Ansible's own types parse each option; the range and syntax checks it has no words for (a port is 1..65535, a
timeout is a finite positive number, a seed is host or host:port) are here, so every module refuses the same
values with the same message before it connects anywhere.
"""

from __future__ import annotations

import math
import re

from ansible_collections.stateserver.ha.plugins.module_utils._records import (
    AddressError,
    normalise_address,
)

DEFAULT_REPLICA_SET = "stateserver"
DEFAULT_PORT = 37017
# Longer than any sensible wait; beyond it pymongo's and the OS's timers overflow.
MAX_SECONDS = 86400.0


def connection_argument_spec() -> dict:
    """A fresh copy of the shared connection options, to be extended by each module."""
    return {
        "replica_set": {"type": "str", "default": DEFAULT_REPLICA_SET},
        "port": {"type": "int", "default": DEFAULT_PORT},
        "seeds": {"type": "list", "elements": "str", "default": ["localhost"]},
        "login_user": {"type": "str"},
        "login_password": {"type": "str", "no_log": True},
        "login_database": {"type": "str", "default": "admin"},
        "tls": {"type": "bool", "default": False},
        "tls_ca_file": {"type": "path"},
        "tls_certificate_key_file": {"type": "path"},
        "tls_certificate_key_file_password": {"type": "str", "no_log": True},
        "tls_allow_invalid_certificates": {"type": "bool", "default": False},
        "server_selection_timeout": {"type": "float", "default": 10.0},
    }


def connection_defaults() -> dict:
    """The shared options' defaults, for callers that build parameters without an argument spec."""
    return {name: spec.get("default") for name, spec in connection_argument_spec().items()}


# login_user and login_password only make sense together.
CONNECTION_REQUIRED_TOGETHER = [["login_user", "login_password"]]


def host_port(text, default_port: int, what: str = "address") -> str:
    """'host', 'host:port', an IPv6 literal or '[v6]:port' as canonical 'host:port' ('[v6]:port').

    Raises ValueError naming `what` and saying what is wrong (the one address syntax: _records.parse_address).
    """
    try:
        return normalise_address(text.strip() if isinstance(text, str) else text, default_port)
    except AddressError as exc:
        raise ValueError(f"{what}: {exc}") from None


def check_seconds(value, name: str) -> str | None:
    """None when `value` is a usable number of seconds (> 0, finite, at most a day), else the message."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= MAX_SECONDS:
        return f"{name} must be a number of seconds greater than 0 and at most {int(MAX_SECONDS)}, got {value!r}"
    return None


def check_connection(params: dict) -> str | None:
    """None when the shared connection options are usable, else one message naming the option and what is valid."""
    port = params.get("port")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        return f"port must be from 1 to 65535, got {port!r}"
    problem = check_seconds(params.get("server_selection_timeout"), "server_selection_timeout")
    if problem:
        return problem
    name = params.get("replica_set")
    if not name or not isinstance(name, str) or re.search(r"[\s/]", name):
        return f"replica_set must be a replica set name without spaces or '/', got {name!r}"
    seeds = params.get("seeds")
    if not seeds:
        return "seeds is empty; give at least one member as host or host:port"
    try:
        for i, seed in enumerate(seeds):
            host_port(seed, port, f"seeds[{i}]")
    except ValueError as exc:
        return str(exc)
    return None

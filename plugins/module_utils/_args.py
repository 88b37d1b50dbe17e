# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The connection options every module of the collection shares (documented in doc_fragments/connection.py)."""

from __future__ import annotations

DEFAULT_REPLICA_SET = "stateserver"
DEFAULT_PORT = 37017


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


# login_user and login_password only make sense together.
CONNECTION_REQUIRED_TOGETHER = [["login_user", "login_password"]]

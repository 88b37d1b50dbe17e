# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Connection options shared by every module; the argument spec is plugins/module_utils/_args.py.
    DOCUMENTATION = r"""
options:
  replica_set:
    description:
      - Name of the replica set of the state machines (pymongo C(replicaSet)); not empty, no spaces or V(/).
    type: str
    default: stateserver
  port:
    description:
      - Port used for every seed that does not name its own port, from 1 to 65535.
    type: int
    default: 37017
  seeds:
    description:
      - Members to discover the replica set through, each V(host), V(host:port), an IPv6 address or
        V([IPv6]:port). Anything else (an empty entry, spaces inside, a port outside 1..65535) is refused before
        any connection is made.
      - Any reachable member is enough; the module finds the primary itself, so the task may run on any host
        and with C(run_once).
      - Seeds are probed in parallel. A seed where nothing listens (a spare without mongod) refuses at once and
        costs nothing; a host that does not answer at all costs one second, once.
    type: list
    elements: str
    default: [localhost]
  login_user:
    description:
      - User to authenticate as (pymongo C(username)). Without it the module connects unauthenticated.
    type: str
  login_password:
    description:
      - Password of O(login_user) (pymongo C(password)).
    type: str
  login_database:
    description:
      - Database the user is defined in (pymongo C(authSource)).
    type: str
    default: admin
  tls:
    description:
      - Connect with TLS (pymongo C(tls)).
    type: bool
    default: false
  tls_ca_file:
    description:
      - CA bundle that signed the members' certificates (pymongo C(tlsCAFile)).
    type: path
  tls_certificate_key_file:
    description:
      - Client certificate and key in one PEM file (pymongo C(tlsCertificateKeyFile)).
    type: path
  tls_certificate_key_file_password:
    description:
      - Password that decrypts the key in O(tls_certificate_key_file) (pymongo C(tlsCertificateKeyFilePassword)).
    type: str
  tls_allow_invalid_certificates:
    description:
      - Accept member certificates that do not verify (pymongo C(tlsAllowInvalidCertificates)). For tests only.
    type: bool
    default: false
  server_selection_timeout:
    description:
      - Seconds to wait for a suitable member on each operation (pymongo C(serverSelectionTimeoutMS) / 1000).
      - A number greater than 0 and at most 86400.
    type: float
    default: 10.0
requirements:
  - pymongo >= 4.6 on the host that runs the task
"""

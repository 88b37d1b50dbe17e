#!/usr/bin/python
# ruff: noqa: EXE001 (ansible-test requires module files with a shebang to be non-executable)
# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ha_status_info
short_description: Read the state machines' replica set, its members and machine records, as rows and a table
version_added: 0.2.0
description:
  - Read-only. Returns one row per machine (the pool hosts, the recorded machines and any member that belongs to
    no machine) with its address, whether it wants and has a vote, its state, whether it is the primary and a note;
    the same rows as a text table; and the records, members, primary, voters and whether the set is in its desired
    peer group (what M(stateserver.ha.peergroup) would leave unchanged).
  - A member that fell too far behind to catch up (mongod's C(tooStale), RECOVERING until resynced) gets a note
    saying it needs a resync. M(stateserver.ha.peergroup) never gives such a member a vote.
  - A replica set that was never initiated is not an error; RV(initiated) is then false and every machine's state
    is V(no replica set). Neither is a set where no seed answers at all (before mongod is installed), for which
    RV(answered) is false as well.
  - With O(probe_api), every machine's API server is asked C(GET /v1/live) from where the module runs, all at once
    and each for at most O(api_timeout) seconds; only an HTTP 200 answer whose JSON body has C(status) V(ok)
    counts as answering. RV(rows[].api_answers) and the table's API column report it.
  - With TLS, the module reads when the certificate served at each machine's mongod address (O(tls)) and at its
    API address (O(probe_api) with O(api_scheme=https)) expires, from the TLS handshake itself, whether or not that
    certificate verifies (an expired one does not). The API server's comes from the handshake of its
    C(GET /v1/live) probe, and one more handshake only when that one does not verify; mongod's from one handshake
    per member address. RV(rows[].mongo_certificate_not_after), RV(rows[].api_certificate_not_after) and the
    table's CERT column report them; a certificate expired or expiring within O(certificate_warning_days) gets a
    note. Nothing is read without TLS.
  - Before 0.2.0 this module was called C(stateserver.ha.ha_status); that name still works and redirects here.
author:
  - stateserver.ha developers (@stateserver)
options:
  pool:
    description:
      - The hosts that may be state machines, as given to M(stateserver.ha.ensure_availability). Pool hosts come
        first in the rows, in this order; a pool host that is not a member is a V(spare).
      - Left out, the rows list the recorded machines and the members only.
      - The pool is validated as M(stateserver.ha.ensure_availability) validates it (unique names and addresses,
        V(host:port) syntax); an invalid pool fails the task with what to fix.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Machine name (its inventory name).
        type: str
        required: true
      mongo_address:
        description: The host's mongod address as its member host string, V(host:port). Wins over O(pool[].address).
        type: str
      address:
        description: The host's address, V(host) (O(port) is added) or V(host:port).
        type: str
      api_address:
        description:
          - The host's API server address, V(host:port), asked by O(probe_api) when the machine has no record yet.
            Left out, the host with port 17070.
        type: str
      reachable:
        description: Accepted so the pool given to M(stateserver.ha.ensure_availability) can be passed as is; not used.
        type: bool
  probe_api:
    description:
      - Ask each machine's API server whether it answers (C(GET /v1/live) at the machine record's C(api_address),
        else at the pool host's O(pool[].api_address), which defaults to the host with port 17070).
      - Members that belong to no machine have no API address and are not asked.
    type: bool
    default: true
  api_timeout:
    description: Seconds each API server has to answer; the probes run in parallel, so this bounds them all.
    type: float
    default: 1.0
  api_scheme:
    description:
      - V(http) for API servers that serve plain HTTP (the C(stateserver.ha.api_server) role with
        C(api_server_tls=false)), V(https) for servers that serve TLS (the role's default). The playbooks' status
        table uses V(https) with the deployment CA unless C(stateserver_tls) is false.
    type: str
    choices: [http, https]
    default: http
  api_ca_file:
    description:
      - CA certificate file (PEM) to verify the API servers' certificates with, for O(api_scheme=https); typically
        the deployment CA. Left out, the system's trusted CAs are used. A server whose certificate does not verify
        counts as not answering.
    type: path
  certificate_warning_days:
    description:
      - A certificate that expires within this many days (or has expired) is flagged in its row's note and with
        V(!) in the table's CERT column, naming C(rotate-certificates.yml).
    type: int
    default: 30
requirements:
  - cryptography >= 42 where the module runs, to read the certificates' expiry (without it, the rest is reported
    and a warning says so)
extends_documentation_fragment:
  - stateserver.ha.connection
  - stateserver.ha.attributes
attributes:
  check_mode:
    support: full
    details:
      - The module only reads, so it behaves the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
seealso:
  - module: stateserver.ha.peergroup
  - module: stateserver.ha.ensure_availability
"""

EXAMPLES = r"""
- name: Read the state of the replica set
  stateserver.ha.ha_status_info:
    seeds: [192.0.2.11, 192.0.2.12, 192.0.2.13]
    login_user: admin
    login_password: "{{ mongod_admin_password }}"
    pool:
      - {name: sm1, address: 192.0.2.11}
      - {name: sm2, address: 192.0.2.12}
      - {name: sm3, address: 192.0.2.13}
      - {name: sm4, address: 192.0.2.14}
  register: ha

- name: Read the state without asking the API servers
  stateserver.ha.ha_status_info:
    seeds: [192.0.2.11]
    probe_api: false

- name: Print the status of every machine
  ansible.builtin.debug:
    msg: "{{ ha.table }}"

- name: Name the members that need a resync
  ansible.builtin.debug:
    msg: "{{ ha.rows | selectattr('note', 'search', 'resync') | map(attribute='machine') | list }}"

- name: Read the state of a TLS deployment, flagging certificates that expire within 60 days
  stateserver.ha.ha_status_info:
    seeds: [192.0.2.11]
    tls: true
    tls_ca_file: stateserver-secrets/ca.crt
    api_scheme: https
    api_ca_file: stateserver-secrets/ca.crt
    certificate_warning_days: 60
  register: ha_tls

- name: Fail when a mongod certificate expires within two weeks
  ansible.builtin.assert:
    that: ha_tls.rows | rejectattr('mongo_certificate_days_left', 'none') | selectattr('mongo_certificate_days_left', 'lt', 14) | list | length == 0
"""

RETURN = r"""
answered:
  description: Whether any seed answered. False when no mongod runs at any seed yet.
  returned: always
  type: bool
  sample: true
initiated:
  description: Whether the replica set exists.
  returned: always
  type: bool
  sample: true
rows:
  description:
    - One row per machine, pool hosts first (in pool order), then recorded machines not in the pool (by name), then
      members that belong to no machine (by member id).
  returned: always
  type: list
  elements: dict
  sample: [{"machine": "sm1", "address": "192.0.2.11:37017", "wants_vote": true, "has_vote": true,
            "state": "PRIMARY", "primary": true, "note": ""}]
  contains:
    machine:
      description: Machine name (for a member of no machine, its C(stateserver-machine) tag or its host).
      type: str
      sample: sm1
    address:
      description: The member's host, else the recorded mongo address, else the pool address.
      type: str
      sample: 192.0.2.11:37017
    wants_vote:
      description: The record's C(wants_vote); null when the machine has no record.
      type: bool
      sample: true
    has_vote:
      description: Whether its member votes; null when the machine is not a member.
      type: bool
      sample: true
    state:
      description:
        - The member's state (V(PRIMARY), V(SECONDARY), V(RECOVERING), V(STARTUP2), V(DOWN) for an unreachable
          member, ...). V(spare) for a machine that is not a member, V(no replica set) before the set exists.
      type: str
      sample: PRIMARY
    primary:
      description: Whether the member is the primary.
      type: bool
      sample: true
    note:
      description:
        - What needs attention, empty when nothing does. A too-stale member says it needs a resync.
      type: str
      sample: ""
    api_answers:
      description:
        - Whether the machine's API server answered C(GET /v1/live) with C(status) V(ok) (HTTP 200); null when it
          was not asked (O(probe_api=false), or a member that belongs to no machine).
      type: bool
      sample: true
    mongo_certificate_not_after:
      returned: when O(tls) is true, or O(probe_api) with O(api_scheme=https)
      description:
        - When the certificate served at the row's address (its mongod) expires, ISO 8601 in UTC. Null without
          O(tls), or when no TLS handshake completed there (nothing listening, a member down).
      type: str
      sample: "2029-03-04T12:36:05+00:00"
    mongo_certificate_days_left:
      returned: when O(tls) is true, or O(probe_api) with O(api_scheme=https)
      description: Days until RV(rows[].mongo_certificate_not_after), to two decimals; negative once it has expired.
      type: float
      sample: 824.99
    api_certificate_not_after:
      returned: when O(tls) is true, or O(probe_api) with O(api_scheme=https)
      description:
        - When the certificate served at the machine's API address expires, ISO 8601 in UTC. Null unless
          O(probe_api) and O(api_scheme=https), or when no TLS handshake completed there.
      type: str
      sample: "2029-03-04T12:36:05+00:00"
    api_certificate_days_left:
      returned: when O(tls) is true, or O(probe_api) with O(api_scheme=https)
      description: Days until RV(rows[].api_certificate_not_after), to two decimals; negative once it has expired.
      type: float
      sample: 824.99
table:
  description:
    - The rows as fixed-width text lines, header first, columns MACHINE ADDRESS WANTS-VOTE HAS-VOTE STATE PRIMARY
      API NOTE (V(yes)/V(no)/V(-) for the votes and the API, V(*) for the primary). Print it with
      M(ansible.builtin.debug).
    - When some certificate was read, a CERT column before NOTE gives the days left of the sooner of the machine's
      two certificates (V(824d)), with V(!) when it is within O(certificate_warning_days) (V(12d!)), V(EXPIRED)
      once it has expired, V(-) when none was read.
  returned: always
  type: list
  elements: str
  sample: ["MACHINE    ADDRESS              WANTS-VOTE  HAS-VOTE  STATE          PRIMARY API  NOTE",
           "sm1        192.0.2.11:37017     yes         yes       PRIMARY        *       yes"]
records:
  description: The machine records that passed validation.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "sm1", "mongo_address": "192.0.2.11:37017", "api_address": "192.0.2.11:17070", "wants_vote": true}]
record_problems:
  description: What is wrong with the stored records that failed validation (M(stateserver.ha.peergroup) refuses
    to act until they are fixed).
  returned: always
  type: list
  elements: str
  sample: []
members:
  description: Every member with its vote and state as the primary (or, without one, any member) sees it.
  returned: always
  type: list
  elements: dict
  sample: [{"member_id": 0, "host": "192.0.2.11:37017", "machine": "sm1", "votes": 1, "priority": 1.0,
            "state": "PRIMARY", "health": 1}]
primary:
  description: Host of the primary, or null when there is none.
  returned: always
  type: str
  sample: 192.0.2.11:37017
voters:
  description: Machines (or hosts of untagged members) that vote.
  returned: always
  type: list
  elements: str
  sample: [sm1, sm2, sm3]
config_version:
  description: The replica set config version (0 before the set exists).
  returned: always
  type: int
  sample: 7
converged:
  description: Whether the set is in its desired peer group.
  returned: always
  type: bool
  sample: true
not_converged:
  description: What is not converged yet.
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.stateserver.ha.plugins.module_utils._args import (
    CONNECTION_REQUIRED_TOGETHER,
    check_connection,
    connection_argument_spec,
)
from ansible_collections.stateserver.ha.plugins.module_utils._replset import (
    HAS_PYMONGO,
    PYMONGO_IMPORT_ERROR,
    ReplSet,
    ReplSetError,
    exit_without_joining_monitors,
)
from ansible_collections.stateserver.ha.plugins.module_utils._status_read import (
    STATUS_OPTIONS,
    check_status_options,
    read_status,
)


def main() -> None:
    exit_without_joining_monitors()
    argument_spec = connection_argument_spec()
    argument_spec.update(STATUS_OPTIONS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_together=CONNECTION_REQUIRED_TOGETHER)
    problem = check_connection(module.params)
    if problem:
        module.fail_json(msg=problem, changed=False)
    hosts, problem = check_status_options(module.params, module.params["port"])
    if problem:
        module.fail_json(msg=problem, changed=False)
    if not HAS_PYMONGO:
        module.fail_json(msg=missing_required_lib("pymongo"), exception=PYMONGO_IMPORT_ERROR)
    try:
        with ReplSet(module.params) as rs:
            result = read_status(rs, module.params, module.params, hosts, module.warn)
    except ReplSetError as exc:
        module.fail_json(msg=str(exc), changed=False)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()

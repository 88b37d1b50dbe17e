#!/usr/bin/python
# ruff: noqa: EXE001 (ansible-test requires module files with a shebang to be non-executable)
# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: peergroup
short_description: Converge the state machines' replica set to its desired peer group, one safe reconfig at a time
version_added: 0.1.0
description:
  - Reads the machine records (C(stateserver.machines), written by M(stateserver.ha.ensure_availability)), the
    replica set config and its status, computes the desired peer group and applies it until the set converges or
    O(timeout) expires.
  - Every member is tagged C(stateserver-machine) with its machine name. Machines that do not want a vote stay as
    non-voting standbys (votes 0, priority 0); the number of voters is odd and at most 7 once converged.
  - Each C(replSetReconfig) changes the set of voting members by at most one. New members are added non-voting
    and get their vote only once they are a healthy SECONDARY. A primary that must lose its vote is stepped down
    first and the plan is recomputed against the new primary. Every planned config is checked against MongoDB's
    rules before it is sent.
  - A step-down is sent over a direct connection to the member the plan names, and only after that member says
    it is still the primary; otherwise the set is re-read. After a step-down nothing is planned until another
    member says, asked directly, that it is the primary, and the next plan is made from that primary's own view
    (a secondary's view can still list the old primary for a heartbeat).
  - A member that is healthy now is moved to a new address (its record's C(mongo_address) changed) only when the
    new address answers as that very member. Otherwise the task fails naming the machine and both addresses, and
    nothing is sent; M(stateserver.ha.ensure_availability) repairs such a record from the inventory.
  - A record whose address answers as a member of another replica set (another name, or the same name but none of
    this set's members) is never added; the task fails naming the machine and the other set, and nothing is sent.
  - Between steps the module waits for exactly one primary, C(health=1) on every member that was up or was added,
    and the same C(configVersion)/C(configTerm) on every healthy member. Waits start at the set's heartbeat
    interval (C(settings.heartbeatIntervalMillis)), double, and are capped at four heartbeats.
  - A connection drop or primary change during a reconfig is answered by re-reading the config, never by sending
    the same reconfig again.
  - "MongoDB's refusals: NodeNotFound (74), ConfigurationInProgress (109), ConflictingOperationInProgress (117),
    and CurrentConfigNotCommittedYet (308) are retried after a backoff, re-reading and re-planning, until
    O(timeout). MaxTimeMSExpired (50), like a primary change during the command, is answered by re-reading the
    config to see whether the step landed. NodeNotElectable (104: the primary changed) re-reads the set and steps the new
    primary down first when it must lose its vote. NewReplicaSetConfigurationIncompatible (103) re-plans when
    another reconfig moved the config version, and otherwise fails at once with the server's message."
  - Two runs at once (two plays, or AWX jobs) are harmless by design, not prevented. Each step is computed from
    the config it read and carries that version + 1; MongoDB installs a non-force reconfig only over an older
    version, so the run whose step arrives second is refused, re-reads and re-plans from the config the other
    installed. Every installed config is one safe step from the previous one, and both runs end converged.
  - Machine records that fail validation (e.g. C(wants_vote) not a boolean, an address that is not
    V(host:port), two machines sharing one address) make the task fail naming the record and the fix; nothing is
    changed.
  - The module finds the primary itself, so it can run on any host of the play and with C(run_once).
author:
  - stateserver.ha developers (@stateserver)
options:
  timeout:
    description:
      - Seconds to wait in total for the set to converge. On expiry the task fails, lists what is not converged
        and returns the steps that were applied.
      - A number greater than 0 and at most 86400.
    type: float
    default: 300
    aliases: [wait_timeout]
  records:
    description:
      - The machine records the plan is for, in the shape M(stateserver.ha.ensure_availability) returns them
        (its RV(stateserver.ha.ensure_availability#module:records) result). Pass that result in check mode and in
        real runs alike.
      - In check mode the plan is made from these records instead of the stored ones, so C(--check) shows the
        steps for the records that M(stateserver.ha.ensure_availability) would write (which it does not write in
        check mode). The steps listed are the steps a real run then sends, in the same order.
      - In a real run they must equal the stored records, or the task fails before anything is sent. A plan is
        only carried out for the records it was shown for (another run may have changed them meanwhile).
      - Left out, the stored records are used in both modes.
      - Every record is validated as the stored ones are (names, addresses, unique mongo addresses); an invalid
        one fails the task with what to fix, and nothing is changed.
    type: list
    elements: dict
    suboptions:
      name:
        description: Machine name (the C(stateserver-machine) tag of its member).
        type: str
        required: true
      mongo_address:
        description: The machine's mongod address, V(host:port).
        type: str
        required: true
      api_address:
        description: The machine's API server address, V(host:port).
        type: str
        required: true
      wants_vote:
        description: Whether the machine should vote.
        type: bool
        required: true
  status:
    description:
      - Also read the status rows once the set has converged (in check mode, as the set is now), as
        M(stateserver.ha.ha_status_info) reads them with these options, and return them as RV(status). A playbook
        that converges and then reports saves a module run (C(ensure-ha.yml) does).
      - Left out, no status is read.
      - The options are validated before anything is sent; an invalid one fails the task and nothing is changed.
        Should the status not be readable after the set converged, the task still succeeds and RV(status) holds only
        C(msg), saying why.
    type: dict
    suboptions:
      pool:
        description: As M(stateserver.ha.ha_status_info)'s O(stateserver.ha.ha_status_info#module:pool).
        type: list
        elements: dict
        default: []
        suboptions:
          name:
            description: Machine name (its inventory name).
            type: str
            required: true
          mongo_address:
            description: The host's mongod address, V(host:port).
            type: str
          address:
            description: The host's address, V(host) or V(host:port).
            type: str
          api_address:
            description: The host's API server address, V(host:port).
            type: str
          reachable:
            description: Accepted so the pool given to M(stateserver.ha.ensure_availability) can be passed as is.
            type: bool
      probe_api:
        description: Ask each machine's API server C(GET /v1/live), as M(stateserver.ha.ha_status_info) does.
        type: bool
        default: true
      api_timeout:
        description: Seconds each API server has to answer (the probes run in parallel).
        type: float
        default: 1.0
      api_scheme:
        description: V(https) for API servers that serve TLS, V(http) for plain HTTP.
        type: str
        choices: [http, https]
        default: http
      api_ca_file:
        description: CA certificate file (PEM) to verify the API servers with, for O(status.api_scheme=https).
        type: path
      certificate_warning_days:
        description: A certificate that expires within this many days is flagged.
        type: int
        default: 30
extends_documentation_fragment:
  - stateserver.ha.connection
  - stateserver.ha.attributes
attributes:
  check_mode:
    support: full
    details:
      - Returns the whole planned sequence of steps, assuming every new member becomes a healthy SECONDARY. Sends
        nothing and does not wait.
  diff_mode:
    support: full
    details:
      - Shows the member documents (id, host, votes, priority, tags) before and after.
  idempotent:
    support: full
notes:
  - The login user needs the C(clusterManager) role (replSetReconfig, replSetStepDown) and read access to the
    C(stateserver) database.
seealso:
  - module: stateserver.ha.ensure_availability
"""

EXAMPLES = r"""
- name: Converge the replica set to the planned voters
  stateserver.ha.peergroup:
    seeds: "{{ groups['state_machines'] | map('extract', hostvars, 'ansible_host') | list }}"
    login_user: admin
    login_password: "{{ mongod_admin_password }}"
  run_once: true
  delegate_to: localhost

- name: Show what would change, without changing it
  stateserver.ha.peergroup:
    seeds: [192.0.2.11:37017]
    login_user: admin
    login_password: "{{ mongod_admin_password }}"
  check_mode: true
  diff: true

- name: Plan the records and converge to them (with --check, shows the steps a real run sends)
  stateserver.ha.ensure_availability:
    n: 5
    pool: "{{ pool }}"
    seeds: "{{ seeds }}"
  register: plan

- name: Converge to the planned records
  stateserver.ha.peergroup:
    seeds: "{{ seeds }}"
    records: "{{ plan.records }}"
"""

RETURN = r"""
changed:
  description: Whether a step was applied (or, in check mode, would be).
  returned: always
  type: bool
  sample: true
steps:
  description: The steps applied in order (in check mode, the steps planned), each with its resulting config version.
  returned: always
  type: list
  elements: dict
  sample: [{"action": "add", "machine": "sm2", "member_id": 1, "config_version": 3},
           {"action": "promote", "machine": "sm2", "member_id": 1, "config_version": 4}]
  contains:
    action:
      description: One of V(add), V(promote), V(demote), V(remove), V(update_address), V(step_down).
      type: str
      sample: promote
    machine:
      description: The machine the step is about.
      type: str
      sample: sm2
    member_id:
      description: The replica set member C(_id) the step is about.
      type: int
      sample: 1
    config_version:
      description: The config version in force after the step.
      type: int
      sample: 4
members:
  description: The members of the replica set at the end (in check mode, as they are now).
  returned: always
  type: list
  elements: dict
  sample: [{"member_id": 0, "host": "192.0.2.11:37017", "machine": "sm1", "votes": 1, "priority": 1.0,
            "state": "PRIMARY", "health": 1}]
  contains:
    member_id:
      description: Member C(_id).
      type: int
      sample: 0
    host:
      description: Member C(host) (host:port).
      type: str
      sample: 192.0.2.11:37017
    machine:
      description: The C(stateserver-machine) tag, or null for an untagged member.
      type: str
      sample: sm1
    votes:
      description: Votes of the member (0 or 1).
      type: int
      sample: 1
    priority:
      description: Election priority.
      type: float
      sample: 1.0
    state:
      description: Member state as the primary sees it (C(stateStr)).
      type: str
      sample: SECONDARY
    health:
      description: 1 when the member is reachable, 0 when not.
      type: int
      sample: 1
primary:
  description: Host of the primary at the end, or null when there is none.
  returned: always
  type: str
  sample: 192.0.2.11:37017
voters:
  description: Machines (or hosts of untagged members) that vote at the end (in check mode, after the planned steps).
  returned: always
  type: list
  elements: str
  sample: [sm1, sm2, sm3]
config_version:
  description: The replica set config version at the end (in check mode, after the planned steps).
  returned: always
  type: int
  sample: 7
converged:
  description: Whether the set is in its desired peer group. Always true when the task succeeds outside check mode.
  returned: always
  type: bool
  sample: true
not_converged:
  description: What is not converged yet (empty when converged); filled on a timeout failure.
  returned: always
  type: list
  elements: str
  sample: ["member 192.0.2.14:37017 is not healthy (DOWN)"]
elapsed:
  description: Seconds the module spent converging.
  returned: always
  type: float
  sample: 12.4
status:
  description:
    - With O(status), what M(stateserver.ha.ha_status_info) returns (RV(stateserver.ha.ha_status_info#module:rows),
      RV(stateserver.ha.ha_status_info#module:table), the records, members, primary, voters and convergence), read
      after the set converged; in check mode, as the set is now.
    - When it could not be read, only C(msg), saying why.
  returned: when O(status) is given
  type: dict
  sample: {"table": ["MACHINE    ADDRESS              WANTS-VOTE  HAS-VOTE  STATE          PRIMARY API  NOTE",
                     "sm1        192.0.2.11:37017     yes         yes       PRIMARY        *       yes"]}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.stateserver.ha.plugins.module_utils._args import (
    CONNECTION_REQUIRED_TOGETHER,
    check_connection,
    check_seconds,
    connection_argument_spec,
)
from ansible_collections.stateserver.ha.plugins.module_utils._converge import (
    converge,
    member_docs,
    plan_only,
)
from ansible_collections.stateserver.ha.plugins.module_utils._records import parse_record_docs
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
    argument_spec.update(
        timeout={"type": "float", "default": 300, "aliases": ["wait_timeout"]},
        records={"type": "list", "elements": "dict", "options": {
            "name": {"type": "str", "required": True},
            "mongo_address": {"type": "str", "required": True},
            "api_address": {"type": "str", "required": True},
            "wants_vote": {"type": "bool", "required": True},
        }},
        status={"type": "dict", "options": STATUS_OPTIONS},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_together=CONNECTION_REQUIRED_TOGETHER)
    problem = check_connection(module.params) or check_seconds(module.params["timeout"], "timeout")
    if problem:
        module.fail_json(msg=problem, changed=False)
    records = None
    if module.params["records"] is not None:
        records, problems = parse_record_docs([
            {"_id": r["name"], "mongo_address": r["mongo_address"], "api_address": r["api_address"],
             "wants_vote": r["wants_vote"]} for r in module.params["records"]])
        if problems:
            module.fail_json(msg="the records option is not valid, nothing was changed: " + "; ".join(problems),
                             changed=False)
    status_options, status_hosts = module.params["status"], []
    if status_options is not None:
        status_hosts, problem = check_status_options(status_options, module.params["port"])
        if problem:
            module.fail_json(msg=f"status: {problem}; nothing was changed", changed=False)
    if not HAS_PYMONGO:
        module.fail_json(msg=missing_required_lib("pymongo"), exception=PYMONGO_IMPORT_ERROR)

    status = None
    try:
        with ReplSet(module.params) as rs:
            if module.check_mode:
                outcome = plan_only(rs, records)
            else:
                outcome = converge(rs, module.params["timeout"], records=records)
            if status_options is not None:
                # The set has converged: a failure to read it now is reported, not a failed convergence.
                try:
                    status = read_status(rs, module.params, status_options, status_hosts, module.warn)
                except ReplSetError as exc:
                    status = {"msg": str(exc)}
    except ReplSetError as exc:
        # A timeout, a refusal or invalid records: report what was applied before it (nothing, for most).
        partial = getattr(exc, "outcome", None)
        extra = partial.as_result() if partial is not None else {}
        module.fail_json(msg=str(exc), changed=bool(partial and partial.steps), **extra)

    result = dict(changed=bool(outcome.steps), **outcome.as_result())
    if status is not None:
        result["status"] = status
    if module._diff:
        result["diff"] = {"before": {"members": member_docs(outcome.before)},
                          "after": {"members": member_docs(outcome.after)}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()

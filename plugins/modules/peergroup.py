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
  - Between steps the module waits for exactly one primary, C(health=1) on every member that was up or was added,
    and the same C(configVersion)/C(configTerm) on every healthy member. Waits back off from 2 seconds, doubling.
  - A connection drop or primary change during a reconfig is answered by re-reading the config, never by sending
    the same reconfig again.
  - The module finds the primary itself, so it can run on any host of the play and with C(run_once).
author:
  - stateserver.ha developers (@stateserver)
options:
  timeout:
    description:
      - Seconds to wait in total for the set to converge. On expiry the task fails, lists what is not converged
        and returns the steps that were applied.
    type: float
    default: 300
    aliases: [wait_timeout]
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
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.stateserver.ha.plugins.module_utils._args import (
    CONNECTION_REQUIRED_TOGETHER,
    check_connection,
    check_seconds,
    connection_argument_spec,
)
from ansible_collections.stateserver.ha.plugins.module_utils._converge import (
    ConvergeTimeout,
    converge,
    member_docs,
    plan_only,
)
from ansible_collections.stateserver.ha.plugins.module_utils._replset import (
    HAS_PYMONGO,
    PYMONGO_IMPORT_ERROR,
    ReplSet,
    ReplSetError,
)


def main() -> None:
    argument_spec = connection_argument_spec()
    argument_spec.update(timeout={"type": "float", "default": 300, "aliases": ["wait_timeout"]})
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_together=CONNECTION_REQUIRED_TOGETHER)
    if not HAS_PYMONGO:
        module.fail_json(msg=missing_required_lib("pymongo"), exception=PYMONGO_IMPORT_ERROR)
    problem = check_connection(module.params) or check_seconds(module.params["timeout"], "timeout")
    if problem:
        module.fail_json(msg=problem, changed=False)

    with ReplSet(module.params) as rs:
        try:
            if module.check_mode:
                outcome = plan_only(rs)
            else:
                outcome = converge(rs, module.params["timeout"])
        except ConvergeTimeout as exc:
            module.fail_json(msg=str(exc), changed=bool(exc.outcome.steps), **exc.outcome.as_result())
        except ReplSetError as exc:
            partial = getattr(exc, "outcome", None)
            extra = partial.as_result() if partial is not None else {}
            module.fail_json(msg=str(exc), changed=bool(partial and partial.steps), **extra)

    result = dict(changed=bool(outcome.steps), **outcome.as_result())
    if module._diff:
        result["diff"] = {"before": {"members": member_docs(outcome.before)},
                          "after": {"members": member_docs(outcome.after)}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()

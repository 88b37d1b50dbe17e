#!/usr/bin/python
# ruff: noqa: EXE001 (ansible-test requires module files with a shebang to be non-executable)
# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ensure_availability
short_description: Plan an odd number of voting state machines and record the plan in the replica set
version_added: 0.1.0
description:
  - Makes sure there are O(n) voting state machines, in the spirit of Juju's C(ensure-availability).
  - Validates O(n) before connecting to anything. Reads the replica set config, its status and the machine records
    (collection C(stateserver.machines)), then plans which machines are maintained, which are added from O(pool),
    which new machines are promoted and which voters that have been down longer than O(down_after) seconds are
    demoted and replaced.
  - When the replica set exists and the task is not in check mode, it writes the planned machine records with
    majority write concern. It never touches the replica set config; M(stateserver.ha.peergroup) applies the
    records to the set.
  - With no replica set yet it returns RV(bootstrap), the first pool host, which must initiate a one-member set
    (the C(stateserver.ha.mongod) role does); run the module again afterwards so the records are written.
  - It never reduces the number of voters. It fails, changing nothing, when a majority of the voters is down or
    the pool has too few healthy hosts.
  - When the set has no primary at the moment (an election under way) it waits up to O(server_selection_timeout)
    seconds for one before planning.
author:
  - stateserver.ha developers (@stateserver)
options:
  n:
    description:
      - Number of voting state machines wanted. Exactly V(3), V(5) or V(7); anything else fails before any
        connection is made.
    type: raw
    default: 3
  pool:
    description:
      - The hosts that may serve as state machines (usually the inventory group C(state_machines)), in order of
        preference.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - Machine name (usually C(inventory_hostname)); the member tag C(stateserver-machine) and record C(_id).
        type: str
        required: true
      address:
        description:
          - Host the machine's mongod listens on, V(host) or V(host:port); O(port) is used when no port is given.
          - One of O(pool[].address) and O(pool[].mongo_address) is required.
        type: str
      mongo_address:
        description:
          - The member C(host) string, V(host:port). Takes precedence over O(pool[].address).
        type: str
      api_address:
        description:
          - Address of the machine's API server, V(host:port). Defaults to the host of the mongo address and port
            V(17070).
        type: str
      reachable:
        description:
          - Whether the host answered (for example an C(ansible.builtin.ping) with C(ignore_unreachable)).
            Unreachable hosts are not added.
        type: bool
        default: true
  down_after:
    description:
      - Seconds a voter must have been unreachable before it is demoted and replaced. A member that is merely
        starting or syncing is never replaced.
    type: float
    default: 60
extends_documentation_fragment:
  - stateserver.ha.connection
  - stateserver.ha.attributes
attributes:
  check_mode:
    support: full
    details:
      - Plans and reports exactly as a real run does; writes no record.
  diff_mode:
    support: full
    details:
      - Shows the machine records before and after.
  idempotent:
    support: full
seealso:
  - module: stateserver.ha.peergroup
"""

EXAMPLES = r"""
- name: Plan five voting state machines
  stateserver.ha.ensure_availability:
    n: 5
    pool:
      - {name: sm1, address: 192.0.2.11}
      - {name: sm2, address: 192.0.2.12}
      - {name: sm3, address: 192.0.2.13}
      - {name: sm4, address: 192.0.2.14}
      - {name: sm5, address: 192.0.2.15, api_address: "192.0.2.15:17070"}
    seeds: [192.0.2.11, 192.0.2.12]
    login_user: admin
    login_password: "{{ mongod_admin_password }}"
  register: ha_plan
  run_once: true
  delegate_to: localhost

- name: Print the plan
  ansible.builtin.debug:
    msg: "{{ ha_plan.report }}"
"""

RETURN = r"""
changed:
  description: Whether the plan changes anything (records written, machines added or demoted, a bootstrap needed).
  returned: always
  type: bool
  sample: true
target:
  description: The number of voters planned.
  returned: success
  type: int
  sample: 3
maintained:
  description: Voting machines that keep their vote.
  returned: success
  type: list
  elements: str
  sample: [sm1]
added:
  description: Machines added from the pool.
  returned: success
  type: list
  elements: str
  sample: [sm2, sm3]
promoted:
  description: Existing non-voting machines that get a vote.
  returned: success
  type: list
  elements: str
  sample: []
demoted:
  description: Voting machines that lose their vote (down longer than O(down_after)).
  returned: success
  type: list
  elements: str
  sample: []
bootstrap:
  description: The machine that must initiate the replica set, when there is none yet; otherwise null.
  returned: success
  type: str
  sample: sm1
machines:
  description: Every machine the plan keeps or adds (including the bootstrap machine), which must be provisioned.
  returned: success
  type: list
  elements: str
  sample: [sm1, sm2, sm3]
report:
  description: What will be done, one Juju-style line each.
  returned: always
  type: list
  elements: str
  sample: ["maintaining machines: sm1", "adding machines: sm2, sm3"]
records:
  description: The machine records after the run (in check mode, as they would be).
  returned: success
  type: list
  elements: dict
  sample: [{"name": "sm1", "mongo_address": "192.0.2.11:37017", "api_address": "192.0.2.11:17070", "wants_vote": true}]
msg:
  description: One line saying what was done, or why nothing was.
  returned: always
  type: str
  sample: "maintaining machines: sm1; adding machines: sm2, sm3"
"""

import re

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.stateserver.ha.plugins.module_utils._args import (
    CONNECTION_REQUIRED_TOGETHER,
    connection_argument_spec,
)
from ansible_collections.stateserver.ha.plugins.module_utils._availability import (
    PoolHost,
    plan_availability,
)
from ansible_collections.stateserver.ha.plugins.module_utils._converge import read_settled
from ansible_collections.stateserver.ha.plugins.module_utils._replset import (
    HAS_PYMONGO,
    PYMONGO_IMPORT_ERROR,
    ReplSet,
    ReplSetError,
    seed_list,
)
from ansible_collections.stateserver.ha.plugins.module_utils._rules import validate_n

API_PORT = 17070


def normalise_n(value):
    """Survey answers and -e extra vars arrive as strings: "5" means 5. Anything else goes to validate_n as is."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return value


def pool_hosts(pool: list, port: int) -> list:
    hosts = []
    for entry in pool:
        address = entry.get("mongo_address") or entry.get("address")
        if not address:
            raise ValueError(f"pool entry {entry.get('name')!r} has neither address nor mongo_address")
        mongo = seed_list([address], port)[0]
        api = entry.get("api_address") or f"{mongo.rsplit(':', 1)[0]}:{API_PORT}"
        hosts.append(PoolHost(name=entry["name"], mongo_address=mongo, api_address=api,
                              reachable=entry.get("reachable", True)))
    return hosts


def record_dicts(records) -> list:
    return [{"name": r.name, "mongo_address": r.mongo_address, "api_address": r.api_address,
             "wants_vote": r.wants_vote} for r in sorted(records, key=lambda r: r.name)]


def main() -> None:
    argument_spec = connection_argument_spec()
    argument_spec.update(
        n={"type": "raw", "default": 3},
        pool={"type": "list", "elements": "dict", "default": [], "options": {
            "name": {"type": "str", "required": True},
            "address": {"type": "str"},
            "mongo_address": {"type": "str"},
            "api_address": {"type": "str"},
            "reachable": {"type": "bool", "default": True},
        }},
        down_after={"type": "float", "default": 60},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_together=CONNECTION_REQUIRED_TOGETHER)
    # n is checked before anything else, so a wrong n never costs (or needs) a connection.
    n = normalise_n(module.params["n"])
    problem = validate_n(n)
    if problem:
        module.fail_json(msg=problem, changed=False, report=[])
    if module.params["down_after"] < 0:
        module.fail_json(msg=f"down_after must be 0 or more seconds, got {module.params['down_after']}",
                         changed=False, report=[])
    try:
        pool = pool_hosts(module.params["pool"], module.params["port"])
    except ValueError as exc:
        module.fail_json(msg=str(exc), changed=False, report=[])
    if not HAS_PYMONGO:
        module.fail_json(msg=missing_required_lib("pymongo"), exception=PYMONGO_IMPORT_ERROR)

    with ReplSet(module.params) as rs:
        try:
            view = read_settled(rs, module.params["server_selection_timeout"])
            records = rs.read_records()
            plan = plan_availability(n, records, pool, view, module.params["down_after"])
            if plan.error:
                module.fail_json(msg=plan.error, changed=False, report=list(plan.messages))
            written = []
            if view.config is not None and not module.check_mode:
                written = rs.write_records(records, plan.records_after)
        except ReplSetError as exc:
            module.fail_json(msg=str(exc), changed=bool(getattr(exc, "written", None)), report=[])

    records_changed = record_dicts(records) != record_dicts(plan.records_after)
    machines = list(plan.maintained) + list(plan.added)
    if plan.bootstrap and plan.bootstrap not in machines:
        machines.insert(0, plan.bootstrap)
    report = list(plan.messages)
    result = {
        "changed": bool(plan.changed or records_changed or written),
        "target": plan.target,
        "maintained": list(plan.maintained),
        "added": list(plan.added),
        "promoted": list(plan.promoted),
        "demoted": list(plan.demoted),
        "bootstrap": plan.bootstrap,
        "machines": machines,
        "report": report,
        "records": record_dicts(plan.records_after),
        "msg": "; ".join(report) or "nothing to do",
    }
    if module._diff:
        result["diff"] = {"before": {"records": record_dicts(records)},
                          "after": {"records": record_dicts(plan.records_after)}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()

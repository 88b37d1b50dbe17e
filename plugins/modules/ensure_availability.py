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
  - Validates every option, and every O(pool) entry (names unique and non-empty, addresses C(host) or
    C(host:port) with a port from 1 to 65535, IPv6 in brackets, no two entries sharing an address), before
    connecting to anything. Reads the replica set config, its status and the machine records (collection
    C(stateserver.machines)), refusing records that fail validation, then plans which machines are maintained,
    which are added from O(pool), which new machines are promoted and which voters that have been down longer than
    O(down_after) seconds are demoted and replaced.
  - Probes every pool host and refuses, changing nothing, when one that answers is a member of another replica set
    (another name, or the same name without being a member of this set's config).
  - Repairs a record whose address no longer matches O(pool) (reported in RV(repaired)), but only when its member
    is not in the set, is down, or answers at the new address; a working member is never moved onto an address
    that is not it.
  - When the replica set exists and the task is not in check mode, it writes the planned machine records with
    majority write concern. It never touches the replica set config; M(stateserver.ha.peergroup) applies the
    records to the set.
  - With no replica set yet (no seed answers, or every seed that answers is an uninitiated mongod) it returns
    RV(first_deployment=true) and RV(bootstrap), the first reachable pool host, which must initiate a one-member set
    (the C(stateserver.ha.mongod) role does); it writes nothing. Run the module again afterwards so the records are
    written and the set grows.
  - It never reduces the number of voters. It fails, changing nothing, when a majority of the voters is down or
    the pool has too few healthy hosts.
  - O(retire) is how a machine leaves (Juju's C(remove-machine)). Its record stops wanting a vote and a spare
    (O(replace_with), else the next reachable pool host that is not a state machine) is recorded in its place in
    the same write, so M(stateserver.ha.peergroup) promotes the spare before it demotes the retiree (stepping it
    down first if it is primary) and the set never has fewer than O(n) voters. Once the retiree's member no longer
    votes, running this module again with the same O(retire) deletes its record, and
    M(stateserver.ha.peergroup) then removes the member from the config. A run without O(retire) in between never
    gives the vote back. It refuses, changing nothing and saying what to do, when a name is unknown, when too few
    spares are left, when the voters that stay would not be a majority of the set (retire one at a time), or when
    a majority of the voters is down.
  - When the set has no primary at the moment (an election under way) it waits up to O(server_selection_timeout)
    seconds for one before planning.
author:
  - stateserver.ha developers (@stateserver)
options:
  n:
    description:
      - Number of voting state machines wanted. Exactly V(3), V(5) or V(7), as a number or a string of those digits
        alone (so C(-e n=5) works); V(" 5"), V(+5), V(05), V(5.0) and digits of other scripts are refused, as
        C(ensure-ha.yml) refuses them. Anything else fails before any connection is made.
    type: int
    choices: [3, 5, 7]
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
        starting or syncing is never replaced. A finite number, 0 or more.
    type: float
    default: 60
  retire:
    description:
      - Names of state machines to retire (their record C(_id), usually C(inventory_hostname)). A name that has no
        record and no member but is in O(pool) is reported as already retired in RV(retired), so a re-run is
        harmless; any other unknown name is refused.
    type: list
    elements: str
    default: []
  replace_with:
    description:
      - The host of O(pool) that takes the place of the retired machine, instead of the next spare. It must be
        reachable and must not already want a vote; a recorded standby is promoted. Only with O(retire), and only
        when a replacement is needed.
    type: str
  api_user:
    description:
      - The API servers' own MongoDB user, kept with exactly these roles and this password once the replica set
        exists, as M(stateserver.ha.mongod_user) keeps a user. It is created when missing, its password or roles set
        when they differ, nothing sent when it matches. In check mode only reported (RV(api_user)).
      - Before the set exists (a first deployment) nothing is done; C(ensure-ha.yml) plans again once the bootstrap
        machine runs the set, and the user is made then, before any API server is configured to log in as it.
      - Checked before anything is sent; an invalid one fails the task and nothing is changed.
    type: dict
    suboptions:
      name:
        description: The user's name.
        type: str
        required: true
      database:
        description: Its authentication database.
        type: str
        default: admin
      password:
        description: Its password, at least 8 characters.
        type: str
        required: true
      roles:
        description: Exactly the roles it holds; a role it has beyond these is taken away.
        type: list
        elements: dict
        required: true
        suboptions:
          role:
            description: Role name.
            type: str
            required: true
          db:
            description: Database of the role.
            type: str
            required: true
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

- name: Retire sm2; sm6 takes its vote
  stateserver.ha.ensure_availability:
    n: 3
    retire: [sm2]
    replace_with: sm6
    pool: "{{ ha_pool }}"
    seeds: [192.0.2.11, 192.0.2.12]
    login_user: admin
    login_password: "{{ mongod_admin_password }}"
  register: ha_retire
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
retiring:
  description: Machines of O(retire) whose record stops wanting a vote now; their members still vote until
    M(stateserver.ha.peergroup) has promoted the replacement.
  returned: success
  type: list
  elements: str
  sample: [sm2]
removed:
  description: Machines of O(retire) whose record is deleted now (their member no longer votes, or is gone);
    M(stateserver.ha.peergroup) removes their members from the config.
  returned: success
  type: list
  elements: str
  sample: []
retired:
  description: Machines of O(retire) that have no record and no member any more (nothing left to do).
  returned: success
  type: list
  elements: str
  sample: []
bootstrap:
  description: The machine that must initiate the replica set, when there is none yet; otherwise null.
  returned: success
  type: str
  sample: sm1
api_user:
  description:
    - With O(api_user), what was sent for it (in check mode, what would be), in order, and a message; no actions
      when it already matched, or when the set does not exist yet.
  returned: when O(api_user) is given
  type: dict
  sample: {"name": "stateserver-api", "database": "admin", "actions": [], "msg": "nothing to change for user stateserver-api@admin"}
  contains:
    actions:
      description: Some of V(create), V(set_password), V(set_roles).
      type: list
      elements: str
      sample: []
first_deployment:
  description: Whether there is no replica set yet; then RV(machines) is the bootstrap machine alone and nothing was
    written.
  returned: success
  type: bool
  sample: false
repaired:
  description: Records whose addresses were taken from O(pool), each as name, old and new address and why it was safe.
  returned: success
  type: list
  elements: str
  sample: ["sm2 (192.0.2.12:37017 -> 192.0.2.22:37017, its member is down)"]
machines:
  description: Every machine the plan keeps or adds, which must be provisioned; on a first deployment only the
    bootstrap machine.
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

import datetime
import math

from ansible.module_utils.basic import AnsibleModule, _load_params, missing_required_lib
from ansible_collections.stateserver.ha.plugins.module_utils._args import (
    CONNECTION_REQUIRED_TOGETHER,
    check_connection,
    connection_argument_spec,
)
from ansible_collections.stateserver.ha.plugins.module_utils._availability import plan_availability
from ansible_collections.stateserver.ha.plugins.module_utils._converge import primary_host, read_settled
from ansible_collections.stateserver.ha.plugins.module_utils._model import ReplSetView
from ansible_collections.stateserver.ha.plugins.module_utils._records import foreign_hosts, parse_pool
from ansible_collections.stateserver.ha.plugins.module_utils._replset import (
    HAS_PYMONGO,
    PYMONGO_IMPORT_ERROR,
    NoSeedAnswered,
    ReplSet,
    ReplSetError,
    exit_without_joining_monitors,
    listening_but_silent,
    listening_problem,
)
from ansible_collections.stateserver.ha.plugins.module_utils._rules import VALID_N
from ansible_collections.stateserver.ha.plugins.module_utils._users import USER_OPTIONS, user_message, user_problems

# A day: far beyond any sensible grace period, and it keeps the value a plain finite number.
MAX_DOWN_AFTER = 86400.0


def n_spelling_problem(raw) -> str | None:
    """Ansible's int type reads " 5", "+5", "05", "٥" and 5.0 as 5; ensure-ha.yml refuses them, and so does this."""
    if isinstance(raw, bool) or not (isinstance(raw, int) or (isinstance(raw, str) and raw in map(str, VALID_N))):
        return (f"n must be 3, 5 or 7, written as a number or as those digits alone (an odd number of voters so votes "
                f"cannot tie, and MongoDB allows at most 7 voting members); got n={raw!r}")
    return None


def option_problem(params: dict) -> str | None:
    """The first option that Ansible's types accept but the module cannot use (ranges, spelling), or None."""
    problem = n_spelling_problem(_load_params().get("n", params["n"]))
    if problem:
        return problem
    down_after = params["down_after"]
    if not math.isfinite(down_after) or not 0 <= down_after <= MAX_DOWN_AFTER:
        return f"down_after must be a number of seconds from 0 to {int(MAX_DOWN_AFTER)}, got {down_after!r}"
    return names_problem(params["retire"], params["replace_with"]) or check_connection(params)


def names_problem(retire: list, replace_with: str | None) -> str | None:
    """A retire or replace_with entry that cannot be a machine name (empty, spaces around it), or None."""
    for key, names in (("retire", retire), ("replace_with", [replace_with])):
        bad = [name for name in names if name is not None and (not name.strip() or name != name.strip())]
        if bad:
            return f"{key} must name machines (their inventory_hostname), got {bad[0]!r}; nothing was changed"
    return None


def record_dicts(records) -> list:
    return [{"name": r.name, "mongo_address": r.mongo_address, "api_address": r.api_address,
             "wants_vote": r.wants_vote} for r in sorted(records, key=lambda r: r.name)]


def read_state(module, rs, pool):
    """(view, records, answers of the pool hosts). No seed answering at all means there is no set yet."""
    params = module.params
    try:
        view = read_settled(rs, params["server_selection_timeout"])
    except NoSeedAnswered as exc:
        listening = listening_but_silent(exc.answers)
        if listening:
            module.fail_json(msg=listening_problem(listening), changed=False, report=[])
        view = ReplSetView(config=None, status=None, now=datetime.datetime.now(datetime.timezone.utc))  # noqa: UP017
    # Through the same ReplSet: a pool host that is also a seed is asked on the client discovery made for it.
    answers = rs.hellos([p.mongo_address for p in pool])
    foreign = foreign_hosts(params["replica_set"], view.config, answers)
    if foreign:
        module.fail_json(msg="; ".join(foreign), changed=False, report=[])
    # The plan writes from these: read them where the last write landed whenever the set has a primary.
    records = rs.read_records(primary=primary_host(view.status) is not None) if view.config is not None else []
    return view, records, answers


def main() -> None:
    exit_without_joining_monitors()
    argument_spec = connection_argument_spec()
    argument_spec.update(
        n={"type": "int", "default": 3, "choices": list(VALID_N)},
        pool={"type": "list", "elements": "dict", "default": [], "options": {
            "name": {"type": "str", "required": True},
            "address": {"type": "str"},
            "mongo_address": {"type": "str"},
            "api_address": {"type": "str"},
            "reachable": {"type": "bool", "default": True},
        }},
        down_after={"type": "float", "default": 60},
        retire={"type": "list", "elements": "str", "default": []},
        replace_with={"type": "str"},
        api_user={"type": "dict", "options": USER_OPTIONS},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_together=CONNECTION_REQUIRED_TOGETHER)
    # Every input is checked before anything else, so a wrong one never costs (or needs) a connection.
    problem = option_problem(module.params)
    if problem:
        module.fail_json(msg=problem, changed=False, report=[])
    api_user = module.params["api_user"]
    if api_user is not None:
        problems = user_problems(api_user["name"], api_user["database"], api_user["password"], api_user["roles"])
        if problems:
            module.fail_json(msg="api_user: " + "; ".join(problems) + "; nothing was changed", changed=False,
                             report=[])
    pool, problems = parse_pool(module.params["pool"], module.params["port"])
    if problems:
        module.fail_json(msg="the pool is not valid, so nothing was changed: " + "; ".join(problems), changed=False,
                         report=[])
    if not HAS_PYMONGO:
        module.fail_json(msg=missing_required_lib("pymongo"), exception=PYMONGO_IMPORT_ERROR)

    n = module.params["n"]
    written, error, user_actions = [], None, []
    with ReplSet(module.params) as rs:
        try:
            view, records, answers = read_state(module, rs, pool)
            plan = plan_availability(n, records, pool, view, module.params["down_after"], answers,
                                     retire=module.params["retire"], replace_with=module.params["replace_with"])
            if plan.error:
                module.fail_json(msg=plan.error, changed=False, report=list(plan.messages))
            if view.config is not None and not module.check_mode:
                written = rs.write_records(records, plan.records_after)
            # After the records: the user is for the API servers the plan's machines run.
            if api_user is not None and view.config is not None:
                user_actions = rs.keep_user(api_user["name"], api_user["database"], api_user["password"],
                                            api_user["roles"], apply=not module.check_mode)
        except ReplSetError as exc:
            error = exc
    if error is not None:
        # Failed outside the handler: the message says all there is, no traceback rides along with it.
        module.fail_json(msg=str(error), changed=bool(getattr(error, "written", None) or written), report=[])

    first = view.config is None
    machines = [plan.bootstrap] if first else list(plan.maintained) + list(plan.added)
    report = list(plan.messages)
    result = {
        "changed": bool(plan.changed or written or user_actions
                        or record_dicts(records) != record_dicts(plan.records_after)),
        "target": plan.target,
        "maintained": list(plan.maintained),
        "added": list(plan.added),
        "promoted": list(plan.promoted),
        "demoted": list(plan.demoted),
        "retiring": list(plan.retiring),
        "removed": list(plan.removed),
        "retired": list(plan.retired),
        "repaired": list(plan.repaired),
        "bootstrap": plan.bootstrap,
        "first_deployment": first,
        "machines": machines,
        "report": report,
        "records": record_dicts(plan.records_after),
        "msg": "; ".join(report) or "nothing to do",
    }
    if api_user is not None:
        result["api_user"] = {"name": api_user["name"], "database": api_user["database"], "actions": user_actions,
                              "msg": user_message(api_user["name"], api_user["database"], user_actions,
                                                  module.check_mode)}
    if module._diff:
        result["diff"] = {"before": {"records": record_dicts(records)},
                          "after": {"records": record_dicts(plan.records_after)}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()

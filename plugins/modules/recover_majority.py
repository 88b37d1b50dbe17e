#!/usr/bin/python
# ruff: noqa: EXE001 (ansible-test requires module files with a shebang to be non-executable)
# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: recover_majority
short_description: Recover a replica set of state machines that lost the majority of its voters, with a forced reconfig
version_added: 0.2.0
description:
  - For when more than half of the voters are gone for good. Asks every member of the last known config directly,
    from the controller, and plans a forced reconfig to the members that answer (the survivors).
  - Refuses, changing nothing, unless O(confirm) is the replica set name, no member is primary, the survivors hold
    no majority of the votes, and every member it drops is unreachable from the controller and, as their own
    replica set status says, from every survivor (a partition is not a loss).
  - Reports, per survivor, its last applied optime and how far behind the most advanced survivor it is. Writes
    acknowledged only by the lost machines may be gone; this cannot be undone.
  - The forced config keeps the survivors only; the most advanced survivor is its only voter, so it is elected and
    no survivor that is behind can win an election and roll its newer writes back. The others stay non-voting
    members that catch up from it. Once it is primary, the records of the lost machines are deleted.
  - Afterwards run M(stateserver.ha.ensure_availability) and M(stateserver.ha.peergroup) (C(ensure-ha.yml) does
    both) to vote the survivors in and bring the set back to n from spares. A lost machine that comes back must be
    wiped before it joins again.
author:
  - stateserver.ha developers (@stateserver)
options:
  confirm:
    description:
      - The replica set name (O(replica_set)), typed by the operator to confirm that writes may be lost.
    type: str
    required: true
  timeout:
    description:
      - Seconds to wait for the most advanced survivor to be elected after the forced reconfig.
    type: float
    default: 60
extends_documentation_fragment:
  - stateserver.ha.connection
  - stateserver.ha.attributes
attributes:
  check_mode:
    support: full
    details:
      - Checks every guard and reports the plan, the survivors' optimes and the forced config; sends nothing.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - Once the set has a primary again the module refuses (it is no longer a majority loss) and changes nothing.
seealso:
  - module: stateserver.ha.ensure_availability
  - module: stateserver.ha.peergroup
"""

EXAMPLES = r"""
- name: Recover from the loss of sm2 and sm3 (sm1 survived)
  stateserver.ha.recover_majority:
    confirm: stateserver
    seeds: [192.0.2.11, 192.0.2.12, 192.0.2.13]
    login_user: admin
    login_password: "{{ mongod_admin_password }}"
  register: recovery
  delegate_to: localhost
"""

RETURN = r"""
changed:
  description: Whether the forced reconfig was sent (in check mode, whether it would be).
  returned: always
  type: bool
  sample: true
survivors:
  description: Machines that answered and stay in the set.
  returned: success
  type: list
  elements: str
  sample: [sm1]
lost:
  description: Machines dropped from the config (their records are deleted).
  returned: success
  type: list
  elements: str
  sample: [sm2, sm3]
most_advanced:
  description: The survivor with the newest applied optime, the only voter of the forced config.
  returned: success
  type: str
  sample: sm1
behind:
  description: Seconds each survivor's last applied write is behind the most advanced survivor's.
  returned: success
  type: dict
  sample: {"sm1": 0}
config:
  description: The forced config sent (in check mode, the one that would be sent); the server raises its version.
    Server types such as the set's C(replicaSetId) are shown as text.
  returned: success
  type: dict
  sample: {"_id": "stateserver", "version": 8, "members": [{"_id": 0, "host": "192.0.2.11:37017", "votes": 1}]}
config_version:
  description: The config version installed on the new primary (the forced version jump included); null in check
    mode.
  returned: success
  type: int
  sample: 54321
primary:
  description: The member elected after the forced reconfig; null in check mode.
  returned: success
  type: str
  sample: 192.0.2.11:37017
records:
  description: The machine records after the run (in check mode, not read; an empty list).
  returned: success
  type: list
  elements: dict
  sample: [{"name": "sm1", "mongo_address": "192.0.2.11:37017", "api_address": "192.0.2.11:17070", "wants_vote": true}]
report:
  description: The survivors' optimes, what may be lost, the forced config, one line each.
  returned: always
  type: list
  elements: str
  sample: ["survivor sm1 (192.0.2.11:37017): last applied optime term 3 at 2026-01-01T12:00:00, the most advanced"]
msg:
  description: What was done, or why nothing was.
  returned: always
  type: str
  sample: "forced reconfig installed: sm1 is primary; run ensure-ha.yml to bring the set back to n"
"""

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.stateserver.ha.plugins.module_utils._args import (
    CONNECTION_REQUIRED_TOGETHER,
    check_connection,
    check_seconds,
    connection_argument_spec,
)
from ansible_collections.stateserver.ha.plugins.module_utils._model import ReplSetView, members_of
from ansible_collections.stateserver.ha.plugins.module_utils._recovery import plan_recovery, records_without_lost
from ansible_collections.stateserver.ha.plugins.module_utils._replset import (
    HAS_PYMONGO,
    PYMONGO_IMPORT_ERROR,
    NoSeedAnswered,
    ReplSet,
    ReplSetError,
    exit_without_joining_monitors,
)

try:
    from pymongo.errors import PyMongoError
except ImportError:  # reported through HAS_PYMONGO
    PyMongoError = Exception


def plain(value):
    """A config as JSON: server types (the set's ObjectId, timestamps) as their text."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def read_members(rs: ReplSet) -> tuple[dict, dict]:
    """(hellos, views) of every member of the newest config a seed holds, each asked directly.

    Raises ReplSetError when the seeds belong to another replica set.
    """
    hellos = rs.probe()
    try:
        # The seeds' answers tell whether the set exists: read_view would otherwise ask every seed again.
        rs.discover(hellos)
    except NoSeedAnswered:
        return hellos, {}
    views: dict = {}
    for rounds in range(2):  # seeds first, then every member their configs name
        for host, hello in hellos.items():
            if host in views or not isinstance(hello, dict) or not hello.get("setName"):
                continue
            try:
                views[host] = rs.read_view(via=host)
            except (ReplSetError, PyMongoError) as exc:
                views[host] = str(exc)
        hosts = {m.host for v in views.values() if isinstance(v, ReplSetView) for m in members_of(v.config)}
        missing = sorted(hosts - set(hellos))
        if not missing or rounds:
            break
        hellos.update(rs.hellos(missing))
    return hellos, views


def force(module, rs: ReplSet, host: str, config: dict) -> tuple[str | None, int | None]:
    """Send the forced config to `host`, then wait for a primary; (primary host or None, installed version)."""
    try:
        with rs.direct(host, auth=True) as client:
            client.admin.command({"replSetReconfig": config, "force": True})
    except PyMongoError as exc:
        module.fail_json(msg=f"the forced reconfig was refused by {host}: {exc}; nothing was changed", changed=False)
    deadline = time.monotonic() + module.params["timeout"]
    while True:
        hello = rs.hellos([host])[host]
        if isinstance(hello, dict) and hello.get("isWritablePrimary"):
            version = hello.get("setVersion")
            return host, int(version) if version is not None else None
        if time.monotonic() > deadline:
            return None, None
        time.sleep(0.5)


def main() -> None:
    exit_without_joining_monitors()
    argument_spec = connection_argument_spec()
    argument_spec.update(confirm={"type": "str", "required": True}, timeout={"type": "float", "default": 60})
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_together=CONNECTION_REQUIRED_TOGETHER)
    problem = check_seconds(module.params["timeout"], "timeout") or check_connection(module.params)
    if problem:
        module.fail_json(msg=problem, changed=False, report=[])
    if not HAS_PYMONGO:
        module.fail_json(msg=missing_required_lib("pymongo"), exception=PYMONGO_IMPORT_ERROR)
    set_name = module.params["replica_set"]
    if module.params["confirm"] != set_name:
        # Checked before any connection: nothing is even read without the confirmation.
        plan = plan_recovery(set_name, module.params["confirm"], {}, {})
        module.fail_json(msg=plan.error, changed=False, report=plan.report)

    with ReplSet(module.params) as rs:
        try:
            hellos, views = read_members(rs)
        except ReplSetError as exc:
            module.fail_json(msg=f"{exc}; nothing was changed", changed=False, report=[])
        plan = plan_recovery(set_name, module.params["confirm"], hellos, views)
        if plan.error:
            module.fail_json(msg=plan.error, changed=False, report=plan.report)
        result = {"changed": True, "survivors": plan.survivors, "lost": plan.lost,
                  "most_advanced": plan.most_advanced, "behind": plan.behind, "config": plain(plan.config),
                  "config_version": None, "primary": None, "records": [], "report": plan.report}
        if module.check_mode:
            module.exit_json(msg="check mode: nothing was sent; " + "; ".join(plan.report), **result)
        best = next(m.host for m in members_of(plan.config) if m.voting)
        primary, version = force(module, rs, best, plan.config)
        result.update(primary=primary, config_version=version)
        if primary is None:
            module.fail_json(msg=(f"the forced config was installed on {best} but it was not elected within "
                                  f"{module.params['timeout']} s; check its log, then run this module again (it "
                                  "reads the set afresh)"), **result)
        try:
            records = rs.read_records()
            after = records_without_lost(records, plan)
            rs.write_records(records, after)
        except ReplSetError as exc:
            module.fail_json(msg=(f"{plan.most_advanced} is primary again, but the lost machines' records could not "
                                  f"be deleted: {exc}; delete them or run ensure-ha.yml"), **result)
    result["records"] = [{"name": r.name, "mongo_address": r.mongo_address, "api_address": r.api_address,
                          "wants_vote": r.wants_vote} for r in after]
    module.exit_json(msg=(f"forced reconfig installed: {plan.most_advanced} is primary; run ensure-ha.yml to bring "
                          "the set back to n"), **result)


if __name__ == "__main__":
    main()

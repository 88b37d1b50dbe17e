#!/usr/bin/python
# ruff: noqa: EXE001 (ansible-test requires module files with a shebang to be non-executable)
# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ha_status
short_description: Read the state machines' replica set, its members and machine records
version_added: 0.1.0
description:
  - Read-only. Returns the machine records, every member with its vote and state, the primary, the voters and
    whether the set is in its desired peer group (what M(stateserver.ha.peergroup) would leave unchanged).
  - A replica set that was never initiated is not an error; RV(initiated) is then false.
author:
  - stateserver.ha developers (@stateserver)
options: {}
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
"""

EXAMPLES = r"""
- name: Read the state of the replica set
  stateserver.ha.ha_status:
    seeds: [192.0.2.11, 192.0.2.12, 192.0.2.13]
    login_user: admin
    login_password: "{{ mongod_admin_password }}"
  register: ha

- name: Print the primary
  ansible.builtin.debug:
    msg: "{{ ha.primary }}"
"""

RETURN = r"""
initiated:
  description: Whether the replica set exists.
  returned: always
  type: bool
  sample: true
records:
  description: The machine records.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "sm1", "mongo_address": "192.0.2.11:37017", "api_address": "192.0.2.11:17070", "wants_vote": true}]
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
from ansible_collections.stateserver.ha.plugins.module_utils._converge import (
    member_summary,
    primary_host,
    voter_names,
)
from ansible_collections.stateserver.ha.plugins.module_utils._peergroup import (
    convergence_report,
)
from ansible_collections.stateserver.ha.plugins.module_utils._replset import (
    HAS_PYMONGO,
    PYMONGO_IMPORT_ERROR,
    ReplSet,
    ReplSetError,
)


def main() -> None:
    module = AnsibleModule(argument_spec=connection_argument_spec(), supports_check_mode=True,
                           required_together=CONNECTION_REQUIRED_TOGETHER)
    if not HAS_PYMONGO:
        module.fail_json(msg=missing_required_lib("pymongo"), exception=PYMONGO_IMPORT_ERROR)
    problem = check_connection(module.params)
    if problem:
        module.fail_json(msg=problem, changed=False)
    with ReplSet(module.params) as rs:
        try:
            view = rs.read_view()
            records = rs.read_records()
        except ReplSetError as exc:
            module.fail_json(msg=str(exc))
    if view.config is None:
        converged, reasons = False, ["the replica set is not initiated"]
    else:
        converged, reasons = convergence_report(view, records)
    module.exit_json(
        changed=False,
        initiated=view.config is not None,
        records=[{"name": r.name, "mongo_address": r.mongo_address, "api_address": r.api_address,
                  "wants_vote": r.wants_vote} for r in records],
        members=member_summary(view.config, view.status),
        primary=primary_host(view.status),
        voters=voter_names(view.config),
        config_version=int((view.config or {}).get("version", 0)),
        converged=converged,
        not_converged=list(reasons),
    )


if __name__ == "__main__":
    main()

#!/usr/bin/python
# ruff: noqa: EXE001 (ansible-test requires module files with a shebang to be non-executable)
# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: mongod_user
short_description: Keep a service's own MongoDB user with exactly the given roles and password
version_added: 0.3.0
description:
  - Logs in to the replica set's primary as an administrator (O(login_user)) and makes user O(name) of
    O(database) exist with the password O(password) and exactly the roles O(roles). It creates the user, or sets its
    password and/or its roles when they differ. A role the user holds and O(roles) does not list is taken away.
  - The password is compared by logging in with it (the server keeps only salted hashes), so an unchanged user
    costs one read and one login, and nothing is written.
  - Writes are acknowledged by a majority of the set.
  - The collection uses it for the API server's user (C(stateserver-api)), which holds C(readWrite) on the
    C(stateserver) database and C(clusterMonitor) (for C(replSetGetConfig) and C(replSetGetStatus)) and nothing
    else, so the admin password never has to reach the API servers.
author:
  - stateserver.ha developers (@stateserver)
options:
  name:
    description: The user's name.
    type: str
    required: true
  database:
    description: The user's authentication database.
    type: str
    default: admin
  password:
    description: The user's password (at least 8 characters).
    type: str
    required: true
  roles:
    description:
      - The roles the user holds, and no others. Each is a built-in or existing role and the database it is
        defined on.
    type: list
    elements: dict
    required: true
    suboptions:
      role:
        description: The role's name, for example V(readWrite).
        type: str
        required: true
      db:
        description: The database the role is defined on (and, for a database role, applies to).
        type: str
        required: true
extends_documentation_fragment:
  - stateserver.ha.connection
  - stateserver.ha.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads the user and tries the password as a real run does and reports the changes in RV(actions); writes
        nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
requirements:
  - pymongo >= 4.6 where the module runs
seealso:
  - module: stateserver.ha.deployment_secrets
"""

EXAMPLES = r"""
- name: Give the API server its own user, allowed its database and the replica set status only
  stateserver.ha.mongod_user:
    seeds: [192.0.2.11, 192.0.2.12, 192.0.2.13]
    login_user: admin
    login_password: "{{ mongod_admin_password }}"
    tls: true
    tls_ca_file: stateserver-secrets/ca.crt
    name: stateserver-api
    password: "{{ api_server_mongo_password }}"
    roles:
      - {role: readWrite, db: stateserver}
      - {role: clusterMonitor, db: admin}
  no_log: true
"""

RETURN = r"""
changed:
  description: Whether the user was created or changed (in check mode, whether it would be).
  returned: always
  type: bool
  sample: true
actions:
  description:
    - What was sent (in check mode, what would be), in order. V(create), or V(set_password) and/or V(set_roles);
      empty when the user is as wanted.
  returned: always
  type: list
  elements: str
  sample: [create]
user:
  description: The user as it is after the run (in check mode, as it would be). Never the password.
  returned: success
  type: dict
  sample: {"name": "stateserver-api", "database": "admin",
           "roles": [{"role": "readWrite", "db": "stateserver"}, {"role": "clusterMonitor", "db": "admin"}]}
msg:
  description: What was done, or why the task failed and what to do.
  returned: always
  type: str
  sample: "created user stateserver-api@admin"
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
from ansible_collections.stateserver.ha.plugins.module_utils._users import USER_OPTIONS, user_message, user_problems


def main() -> None:
    exit_without_joining_monitors()
    argument_spec = connection_argument_spec()
    argument_spec.update(USER_OPTIONS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_together=CONNECTION_REQUIRED_TOGETHER)
    params = module.params
    result = {"changed": False, "actions": []}
    problems = user_problems(params["name"], params["database"], params["password"], params["roles"])
    if not params["login_user"]:
        problems.append("login_user and login_password are required: only an administrator can create a user")
    problem = check_connection(params)
    if problem:
        problems.append(problem)
    if problems:
        module.fail_json(msg="; ".join(problems) + "; nothing was changed", **result)
    if not HAS_PYMONGO:
        module.fail_json(msg=missing_required_lib("pymongo"), exception=PYMONGO_IMPORT_ERROR, **result)

    name, database, roles = params["name"], params["database"], params["roles"]
    try:
        with ReplSet(params) as rs:
            plan = rs.keep_user(name, database, params["password"], roles, apply=not module.check_mode)
    except ReplSetError as exc:
        module.fail_json(msg=f"{exc}; nothing more was sent", **result)
    module.exit_json(msg=user_message(name, database, plan, module.check_mode), changed=bool(plan), actions=plan,
                     user={"name": name, "database": database, "roles": roles})


if __name__ == "__main__":
    main()

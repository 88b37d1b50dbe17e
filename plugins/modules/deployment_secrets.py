#!/usr/bin/python
# ruff: noqa: EXE001 (ansible-test requires module files with a shebang to be non-executable)
# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: deployment_secrets
short_description: Find a deployment's secrets, and make them only for a first deployment
version_added: 0.2.0
description:
  - Decides, on the controller, where each secret of a deployment comes from before any host is touched. The
    secrets are the replica set's keyfile, the admin password, the API token and the API server's own MongoDB
    password.
  - A secret given to the module (from a variable, a vault or an AWX credential) is used as it is and nothing is
    written.
  - Otherwise a file of O(secrets_dir) (C(keyfile), C(admin-password), C(api-token), C(api-mongo-password)) is
    reused.
  - Otherwise the module asks the O(seeds) C(hello), which needs no login. When a member answers as initiated, the
    replica set exists and the task fails naming each missing secret and where it must come from; it never makes
    a new one, because a new keyfile or admin password would lock the run out of the set. An AWX job starts in an
    empty directory, so a secret that is not in O(secrets_dir) may well exist.
  - One exception is the API server's MongoDB password (O(api_mongo_password)) of an existing set that has no user
    O(api_mongo_user) yet (a deployment made before the API server had its own user). It is a new secret, not a
    lost one, so it is generated, after the module logged in as O(admin_user) with the admin password (given or
    in O(secrets_dir)) and asked C(usersInfo). When the user exists, or the question cannot be asked (no admin
    password, or TLS without verifying the members, to which the admin password is never sent), it is missing
    like the others.
  - When no member answers as initiated (a first deployment), the missing secrets are generated into
    O(secrets_dir) (directory mode 0700, files 0600, an existing file never overwritten) and the paths are
    reported, never the values. They must then be stored (a vault, or the AWX credential).
  - Every value given or read is checked (the keyfile is 6 to 1024 base64 characters as mongod requires, the admin
    password and the API server's MongoDB password at least 8 characters, the token at least 16 printable ASCII characters); a bad one fails the task
    naming the secret and where it came from, and nothing is written.
  - A replica set whose every member is down answers no C(hello) and so looks like a first deployment; keep the
    secrets where later runs find them.
author:
  - stateserver.ha developers (@stateserver)
options:
  secrets_dir:
    description:
      - The controller directory that holds the deployment's generated secrets, one directory per deployment.
    type: path
    required: true
  secrets:
    description:
      - The secrets this run needs; only these are looked for, checked and generated.
    type: list
    elements: str
    choices: [keyfile, admin_password, api_token, api_mongo_password]
    default: [keyfile, admin_password, api_token, api_mongo_password]
  keyfile:
    description:
      - The replica set's internal authentication key, when the run has it (for example C(mongod_keyfile_content)).
    type: str
  admin_password:
    description:
      - The admin user's password, when the run has it (for example C(mongod_admin_password)).
    type: str
  api_token:
    description:
      - The API servers' bearer token, when the run has it (for example C(state_machine_api_token)).
    type: str
  api_mongo_password:
    description:
      - The password of the API server's own MongoDB user, when the run has it (C(api_server_mongo_password)).
    type: str
  api_mongo_user:
    description: The API server's MongoDB user (authentication database C(admin)), asked about as described above.
    type: str
    default: stateserver-api
  admin_user:
    description: The administrator the module logs in as to ask whether O(api_mongo_user) exists.
    type: str
    default: admin
  seeds:
    description:
      - Where the replica set's members would answer, each V(host), V(host:port) or an IPv6 address. Asked only
        when a secret is neither given nor in O(secrets_dir).
    type: list
    elements: str
    default: [localhost]
  port:
    description:
      - Port for every seed that does not name its own, from 1 to 65535.
    type: int
    default: 37017
  replica_set:
    description:
      - Name of the replica set, for the messages.
    type: str
    default: stateserver
  tls:
    description:
      - Ask the seeds over TLS (pymongo C(tls)).
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
      - Password that decrypts the key in O(tls_certificate_key_file).
    type: str
  tls_allow_invalid_certificates:
    description:
      - Accept member certificates that do not verify. For tests only.
    type: bool
    default: false
  server_selection_timeout:
    description:
      - Seconds to wait for a seed's answer, greater than 0 and at most 86400.
    type: float
    default: 10.0
requirements:
  - pymongo >= 4.6 on the controller, when the seeds must be asked
extends_documentation_fragment:
  - stateserver.ha.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads and decides exactly as a real run does, and writes nothing; RV(secrets) says which secrets would be
        generated (source V(would_generate)) and RV(resolved) leaves them out.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - Generated secrets are files the next run reuses.
notes:
  - Run the task with C(no_log) and read its failure from the registered result (see EXAMPLES). RV(resolved) holds
    secrets, while the other keys never do.
seealso:
  - module: stateserver.ha.ensure_availability
"""

EXAMPLES = r"""
- name: Resolve the deployment's secrets before touching any host
  stateserver.ha.deployment_secrets:
    secrets_dir: "{{ inventory_dir }}/stateserver-secrets"
    admin_password: "{{ vault_admin_password | default(omit) }}"
    seeds: [192.0.2.11, 192.0.2.12, 192.0.2.13]
  register: secrets
  no_log: true
  failed_when: false

- name: Stop when the existing set's secrets are not in this run
  ansible.builtin.fail:
    msg: "{{ secrets.msg }}"
  when: secrets.resolved is not defined

- name: Say where the secrets come from
  ansible.builtin.debug:
    msg: "{{ secrets.report }}"

- name: Only the API token, for the units
  stateserver.ha.deployment_secrets:
    secrets_dir: /srv/deployments/prod/stateserver-secrets
    secrets: [api_token]
    seeds: [192.0.2.11]
  register: token
  no_log: true
"""

RETURN = r"""
changed:
  description: Whether secrets were generated (in check mode, whether they would be).
  returned: always
  type: bool
  sample: true
secrets:
  description:
    - For each secret asked for, where it comes from (V(variables), V(file), V(generated), V(would_generate) in
      check mode, or V(missing)) and its file (null when given as a variable). Never the value.
  returned: always
  type: dict
  sample: {"keyfile": {"source": "file", "path": "/srv/prod/stateserver-secrets/keyfile"},
           "admin_password": {"source": "variables", "path": null},
           "api_token": {"source": "generated", "path": "/srv/prod/stateserver-secrets/api-token"}}
resolved:
  description:
    - The value of each secret read from or written to O(secrets_dir), keyed as in RV(secrets). A secret given to
      the module is left out (the run already has it), and so is one only planned in check mode.
  returned: success
  type: dict
  sample: {"keyfile": "(756 characters)", "api_token": "(40 characters)"}
generated:
  description: Files written by this run.
  returned: success
  type: list
  elements: str
  sample: ["/srv/prod/stateserver-secrets/api-token"]
deployed:
  description:
    - Whether a member answered C(hello) as initiated. Null when no seed was asked (every secret was given or
      stored).
  returned: always
  type: bool
  sample: false
missing:
  description: Secrets the existing replica set needs and the run does not have (the task failed).
  returned: always
  type: list
  elements: str
  sample: [keyfile, admin_password]
report:
  description: One line per secret saying where it comes from, and what to do with generated ones.
  returned: always
  type: list
  elements: str
  sample: ["keyfile: generated into /srv/prod/stateserver-secrets/keyfile"]
msg:
  description: What was decided, or why the task failed and what to do.
  returned: always
  type: str
  sample: "A first deployment: generated /srv/prod/stateserver-secrets/keyfile (directory 0700, files 0600). ..."
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.stateserver.ha.plugins.module_utils._args import check_connection, connection_argument_spec
from ansible_collections.stateserver.ha.plugins.module_utils._secrets import (
    ADMIN_PASSWORD,
    API_MONGO_PASSWORD,
    BY_NAME,
    GENERATED,
    GIVEN,
    MISSING,
    PROBE_OPTIONS,
    SPECS,
    SecretsDir,
    SecretsDirError,
    answering_members_or_fail,
    generated_message,
    missing_message,
    new_value,
    plan_secrets,
    replset_module,
    value_problem,
)


def report_lines(sources: dict, store: SecretsDir) -> list[str]:
    words = {GIVEN: "given in variables", "file": "reused from {}", GENERATED: "generated into {}",
             "would_generate": "would be generated into {} (check mode)", MISSING: "missing"}
    return [f"{name}: " + words[source].format(store.file(BY_NAME[name])) for name, source in sources.items()]


def api_user_absent(params: dict, store: SecretsDir, stored: set[str]) -> tuple[bool, str]:
    """(True, "") when the existing set has no API user, so its password is a new secret; else (False, why it is
    treated as missing, or ""). The admin password goes only to members whose certificate is verified (or over
    plain TCP, the deployment's documented choice)."""
    if params["tls"] and (params["tls_allow_invalid_certificates"] or not params["tls_ca_file"]):
        return False, (" Whether the set has an API user yet was not asked: the deployment CA is not on this "
                       "controller, and the admin password is never sent to members that cannot be verified.")
    replset = replset_module()
    try:
        password = params[ADMIN_PASSWORD.name]
        if password is None and ADMIN_PASSWORD.name in stored:
            password = store.read(ADMIN_PASSWORD)
        if password is None:
            return False, ""
        login = {key: params[key] for key in PROBE_OPTIONS}
        with replset.ReplSet({**login, "login_user": params["admin_user"], "login_password": password}) as rs:
            return rs.read_user(params["api_mongo_user"], "admin") is None, ""
    except (replset.ReplSetError, SecretsDirError) as exc:
        return False, f" Whether the set has an API user yet could not be asked: {exc}."


def main() -> None:
    connection = connection_argument_spec()
    argument_spec = {key: connection[key] for key in PROBE_OPTIONS}
    argument_spec.update(
        secrets_dir={"type": "path", "required": True},
        secrets={"type": "list", "elements": "str", "choices": [s.name for s in SPECS],
                 "default": [s.name for s in SPECS]},
        keyfile={"type": "str", "no_log": True},
        admin_password={"type": "str", "no_log": True},
        api_token={"type": "str", "no_log": True},
        api_mongo_password={"type": "str", "no_log": True},
        api_mongo_user={"type": "str", "default": "stateserver-api"},
        admin_user={"type": "str", "default": "admin"},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    wanted = tuple(spec for spec in SPECS if spec.name in params["secrets"])
    empty = {"changed": False, "secrets": {}, "deployed": None, "missing": [], "report": []}

    # Every input is checked before the directory or a seed is looked at.
    given = {spec.name for spec in wanted if params[spec.name] is not None}
    for name in sorted(given):
        problem = value_problem(BY_NAME[name], params[name], f"the variable {BY_NAME[name].variable}")
        if problem:
            module.fail_json(msg=problem + "; nothing was changed", **empty)
    problem = check_connection(params)
    if problem:
        module.fail_json(msg=problem, **empty)

    store = SecretsDir(params["secrets_dir"])
    stored = store.stored()
    deployed, answering = None, []
    if any(spec.name not in given and spec.name not in stored for spec in wanted):
        answering = answering_members_or_fail(module, empty)
        deployed = bool(answering)

    plan = plan_secrets(given, stored, bool(deployed), module.check_mode, wanted)
    why_missing = ""
    if plan.missing == [API_MONGO_PASSWORD.name]:
        unused, why_missing = api_user_absent(params, store, stored)
        if unused:
            plan = plan_secrets(given, stored, True, module.check_mode, wanted, frozenset({API_MONGO_PASSWORD.name}))
    result = {
        "changed": bool(plan.to_generate),
        "secrets": {name: {"source": source, "path": None if source == GIVEN else store.file(BY_NAME[name])}
                    for name, source in plan.sources.items()},
        "deployed": deployed,
        "missing": plan.missing,
        "report": report_lines(plan.sources, store),
    }
    if plan.missing:
        result["changed"] = False
        module.fail_json(msg=missing_message(plan.missing, store.path, answering, params["replica_set"]) + why_missing,
                         **result)

    values, generated = {}, []
    try:
        for name, source in plan.sources.items():
            if source == "file":
                values[name] = store.read(BY_NAME[name])
        for name in plan.to_generate:
            if not module.check_mode:
                values[name] = new_value(BY_NAME[name])
                generated.append(store.write(BY_NAME[name], values[name]))
    except SecretsDirError as exc:
        # Files written before the failure stay: they are this first deployment's secrets, and the next run reuses
        # them rather than making others.
        module.fail_json(msg=f"{exc}; written so far: {', '.join(generated) or 'nothing'}",
                         **{**result, "changed": bool(generated)})

    paths = [store.file(BY_NAME[name]) for name in plan.to_generate]
    msg = generated_message(paths, module.check_mode, bool(deployed)) if paths else "; ".join(result["report"])
    if paths:
        result["report"].append(msg)
    module.exit_json(msg=msg, resolved=values, generated=generated, **result)


if __name__ == "__main__":
    main()

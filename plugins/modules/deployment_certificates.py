#!/usr/bin/python
# ruff: noqa: EXE001 (ansible-test requires module files with a shebang to be non-executable)
# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: deployment_certificates
short_description: Keep a deployment's CA and one certificate per state machine on the controller
version_added: 0.2.0
description:
  - Makes, on the controller, the certificate authority of one deployment and a certificate for each state machine,
    in the deployment's secrets directory (the one M(stateserver.ha.deployment_secrets) uses).
  - Files are V(ca.crt), V(ca.key), V(certs/<machine>.crt) and V(certs/<machine>.key); directories are 0700 and
    private keys 0600 from their creation. Keys are ECDSA P-256, signatures SHA-256.
  - The CA is reused on every run. It is made only for a first deployment (no member answers C(hello) as initiated);
    when the replica set exists and the CA is not in O(secrets_dir), the task fails and makes nothing, because
    members and clients trust the CA they were given.
  - A machine's certificate is reused while its key matches, the CA signed it and its subject alternative names
    are exactly the hosts of the machine's addresses (an IP address as an IP entry, a name as a DNS entry) plus
    V(127.0.0.1) and V(localhost), through which the mongod role's own client reaches the member on its host.
    Otherwise it is issued again, for example when a machine's address changes. Certificates carry both the
    server and the client extended key usage, as mongod presents its certificate in both directions.
  - A certificate is also issued again, with a new key, under the same CA when it has expired, when fewer than
    O(renew_before_days) days are left, or always with O(renew=true) (C(playbooks/rotate-certificates.yml) uses
    these and then installs the new certificates one machine at a time).
  - The operator's own CA can be given instead (O(ca_certificate), O(ca_key)), as an AWX job's credential does, since every
    job there starts with an empty secrets directory. It is written to V(ca.crt) and V(ca.key) when they are not
    there, and used. When the directory holds another CA the task fails and changes nothing, because that CA may have
    signed the running members' certificates, so it is never replaced silently.
  - A site whose CA never hands out its key gives the CA certificate (O(ca_certificate) without O(ca_key), or
    V(ca.crt) already in O(secrets_dir)) and each machine's certificate and key (O(operator_certificates)). Then
    nothing is ever issued, O(renew), O(renew_before_days) and O(held) do not apply, and each machine's given
    certificate is used when its key matches, the CA signed it directly, it has not expired, its extended key
    usage (if it has one) allows both server and client use, and it names at least the names a certificate of this
    module carries (other names are allowed, as a corporate CA may add some).
    They are written to V(certs/<machine>.crt) and V(certs/<machine>.key) byte for byte (with one final newline),
    so the roles install exactly the operator's files. A machine without a usable certificate fails the task,
    which names each such machine and what is wrong, and writes nothing.
  - A machine whose certificate is not on the controller keeps the one it holds (O(held)) when that one would be
    reused had it been on the controller (key matching, signed by the CA, exactly the right names, not due). It is
    written to V(certs/<machine>.crt) and V(certs/<machine>.key) as it is, so the roles install the very file the
    machine has and restart nothing; the deployment is unchanged, so this reports no change. Otherwise the
    certificate is issued as for a new machine.
  - Each machine's API server gets a certificate of its own, in V(certs/api/<machine>.crt) and
    V(certs/api/<machine>.key), kept, adopted (O(held_api)), issued and renewed by the same rules as the machine's.
    It names the same hosts but has the subject V(O=stateserver.ha, OU=api-server, CN=<machine>) and the server
    extended key usage only, so that under x509 member authentication mongod does not take it for a member's
    certificate (a member's has V(O=stateserver.ha) alone), and whoever reads the API server's key cannot log in as
    a member. A deployment made before these existed gets them on its next run; the machines' certificates stay.
  - C(playbooks/ensure-ha.yml) calls it right after the deployment's secrets for the CA alone (O(machines) empty,
    or with O(operator_certificates) every pool machine, whose certificates are then checked before anything
    changes) unless V(ca.crt) and V(ca.key) are already in O(secrets_dir) and no CA is given, and again after its
    plan for the machines the plan provisions, unless C(stateserver_tls) is false;
    the mongod role installs the CA and the machine's certificate. A spare no plan provisions gets no certificate.
author:
  - stateserver.ha developers (@stateserver)
options:
  secrets_dir:
    description:
      - The controller directory of the deployment's secrets.
    type: path
    required: true
  machines:
    description:
      - The state machines whose certificates to keep, as internal/pool.yml describes them. May be empty, to keep
        the CA alone. The files of machines not listed are left as they are.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Machine name; its certificate's file name and common name.
        type: str
        required: true
      mongo_address:
        description: Where its mongod is reached, V(host:port).
        type: str
        required: true
      api_address:
        description: Where its API server is reached, V(host:port).
        type: str
        required: true
  renew:
    description:
      - Issue every machine's certificate again (new key, new serial, same CA), whether or not it is due. The task
        then reports a change on every run.
    type: bool
    default: false
  renew_before_days:
    description:
      - Issue a certificate again once at most this many days are left before it expires. V(0) renews only an
        expired certificate. From 0 to 825 (the lifetime of a certificate this module issues), where 825 renews
        them all.
    type: int
    default: 0
  ca_certificate:
    description:
      - The deployment's CA certificate as PEM text, when the operator gives it (for example from an AWX
        credential) instead of keeping V(ca.crt) in O(secrets_dir). Needs O(ca_key), unless
        O(operator_certificates) are given (a CA whose key the operator does not have).
      - It must be a CA certificate (basic constraints CA:TRUE) whose key is O(ca_key).
    type: str
  ca_key:
    description:
      - The unencrypted PEM private key of O(ca_certificate). Never logged.
    type: str
  operator_certificates:
    description:
      - The certificate and unencrypted private key of every machine in O(machines), as PEM text, by machine name,
        each a dictionary with the keys V(certificate) and V(key), when the operator's CA issues them. Entries of
        machines not in O(machines) are ignored. Never logged.
      - An entry may also give its API server's certificate and key, V(api_certificate) and V(api_key) (both or
        neither), checked as the machine's except that server use is enough and that the O, OU and DC of its
        subject must differ from the machine certificate's (equal ones would make it a member's credential). A
        machine without them has its API server serve the machine certificate (its C(api) action in
        RV(certificates) is V(member)), and the task warns.
      - Needs the CA that signed them, in O(ca_certificate) or as V(ca.crt) in O(secrets_dir); its key is not
        needed. The CA must have signed each certificate itself (no intermediate CA in between).
    type: dict
    default: {}
  held:
    description:
      - For machines whose certificate is not on the controller, the certificate and key each one holds, as one
        PEM text (mongod's V(mongod.pem)), by machine name. C(playbooks/internal/held-certificates.yml) reads them.
      - An entry that does not parse, whose key does not match, or that the CA did not sign is ignored (the
        certificate is issued anew), as is the entry of a machine not in O(machines). Never logged.
    type: dict
    default: {}
  held_api:
    description:
      - As O(held), for the API servers' certificates whose files are not on the controller. Each API server's
        certificate followed by its key, as one PEM text, by machine name. An entry whose subject is not an API
        server's (one that serves the machine certificate, as before API certificates existed) is ignored, so its
        API certificate is issued. Never logged.
    type: dict
    default: {}
  seeds:
    description:
      - Where members would answer, asked (C(hello), no login) only when the CA is not in O(secrets_dir).
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
      - Name of the replica set; also the CA's common name.
    type: str
    default: stateserver
  tls:
    description:
      - Ask the seeds over TLS.
    type: bool
    default: false
  tls_ca_file:
    description:
      - CA bundle that signed the members' certificates.
    type: path
  tls_certificate_key_file:
    description:
      - Client certificate and key in one PEM file.
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
  - cryptography >= 42 on the controller
  - pymongo >= 4.6 on the controller, when the seeds must be asked
extends_documentation_fragment:
  - stateserver.ha.attributes
attributes:
  check_mode:
    support: full
    details:
      - Decides as a real run does and makes no CA, no key and no certificate. It does write the CA given in
        O(ca_certificate) and the certificates it adopts from O(held) when they are not in O(secrets_dir) yet,
        because they already exist (in the variables, on the machines) and the plays that follow read them from
        there; writing them changes nothing in the deployment. The same holds for O(operator_certificates).
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - With O(renew=true), or O(renew_before_days) at least the days a certificate has left, every run issues
        certificates again (not with O(operator_certificates), which never issue).
seealso:
  - module: stateserver.ha.deployment_secrets
"""

EXAMPLES = r"""
- name: Keep the deployment CA and the state machines' certificates
  stateserver.ha.deployment_certificates:
    secrets_dir: "{{ inventory_dir }}/stateserver-secrets"
    machines: "{{ __ha_pool }}"
    seeds: "{{ __ha_pool | map(attribute='mongo_address') | list }}"

- name: Issue again the certificates that expire within 30 days
  stateserver.ha.deployment_certificates:
    secrets_dir: "{{ inventory_dir }}/stateserver-secrets"
    machines: "{{ __ha_pool }}"
    renew_before_days: 30

- name: Use the certificates the corporate CA issued (its key stays with the CA)
  stateserver.ha.deployment_certificates:
    secrets_dir: "{{ inventory_dir }}/stateserver-secrets"
    machines: "{{ __ha_pool }}"
    ca_certificate: "{{ lookup('ansible.builtin.file', 'pki/corporate-ca.crt') }}"
    operator_certificates:
      sm1:
        certificate: "{{ lookup('ansible.builtin.file', 'pki/sm1.crt') }}"
        key: "{{ lookup('ansible.builtin.file', 'pki/sm1.key') }}"
"""

RETURN = r"""
changed:
  description: Whether the CA or a certificate was made (in check mode, would be).
  returned: always
  type: bool
  sample: true
ca:
  description:
    - The CA's files and what was done with it (V(reused), V(issued), V(given) when it came from O(ca_certificate)
      or the task uses O(operator_certificates), or V(missing) when the task failed).
  returned: always
  type: dict
  sample: {"action": "reused", "certificate": "/srv/prod/stateserver-secrets/ca.crt",
           "key": "/srv/prod/stateserver-secrets/ca.key"}
certificates:
  description:
    - For each machine, its files, the subject alternative names it must carry, what was done (V(reused),
      V(adopted) from O(held), V(issued), V(reissued), V(given) from O(operator_certificates)), and when the
      certificate now in its file expires (ISO 8601, UTC; null when there is none yet). In check mode the action
      is what a real run would do and the files are the ones already there.
    - Under V(api), the same for the machine's API server's certificate (it carries the same names). Its action
      is V(member) when the operator gave no API certificate; its files are then the machine certificate's.
  returned: success
  type: dict
  sample: {"sm1": {"action": "issued", "certificate": "/srv/prod/stateserver-secrets/certs/sm1.crt",
                   "key": "/srv/prod/stateserver-secrets/certs/sm1.key",
                   "sans": ["DNS:localhost", "IP:127.0.0.1", "IP:192.0.2.11"],
                   "not_after": "2029-03-05T12:00:00+00:00",
                   "api": {"action": "issued", "certificate": "/srv/prod/stateserver-secrets/certs/api/sm1.crt",
                           "key": "/srv/prod/stateserver-secrets/certs/api/sm1.key",
                           "not_after": "2029-03-05T12:00:00+00:00"}}}
problems:
  description:
    - When O(operator_certificates) cannot all be used, what is wrong with each machine's, by machine name.
  returned: failure with O(operator_certificates)
  type: dict
  sample: {"sm2": "the given certificate lacks the subject alternative names IP:192.0.2.12"}
deployed:
  description: Whether a member answered C(hello) as initiated; null when the CA was there and no seed was asked.
  returned: always
  type: bool
  sample: false
msg:
  description: What was done, or why the task failed.
  returned: always
  type: str
  sample: "CA reused; certificates adopted: sm1; certificates issued: sm4; API certificates issued: sm1, sm4"
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.stateserver.ha.plugins.module_utils._args import check_connection, connection_argument_spec
from ansible_collections.stateserver.ha.plugins.module_utils._pki import (
    ADOPT,
    CERT_DAYS,
    CRYPTOGRAPHY_IMPORT_ERROR,
    HAS_CRYPTOGRAPHY,
    ISSUE,
    REISSUE,
    PkiDir,
    PkiDirError,
    Renewal,
    given_api_problems,
    given_certificate,
    given_problems,
    held_on_host,
    load_given_ca,
    load_given_ca_certificate,
    machine_sans,
    new_ca,
    new_certificate,
    plan_certificates,
    utc_now,
)
from ansible_collections.stateserver.ha.plugins.module_utils._records import AddressError, parse_address
from ansible_collections.stateserver.ha.plugins.module_utils._secrets import (
    PROBE_OPTIONS,
    answering_members_or_fail,
)

GIVEN = "given"
# An API server that serves its machine's certificate: operator certificates without an API one.
MEMBER = "member"


def machines_problem(machines: list) -> str | None:
    """The first machine entry that cannot be used (bad address, repeated name, name unfit for a file), or None."""
    seen = set()
    for i, machine in enumerate(machines):
        name = machine["name"]
        if not name or name != name.strip() or "/" in name or name.startswith(".") or name in seen:
            return f"machines[{i}].name must be a unique machine name usable as a file name, got {name!r}"
        seen.add(name)
        for key in ("mongo_address", "api_address"):
            try:
                parse_address(machine[key])
            except AddressError as exc:
                return f"machines[{i}].{key}: {exc}"
    return None


def use_operator_certificates(module: AnsibleModule, pki: PkiDir, given, wanted: dict, base: dict) -> None:
    """Keep the certificates the operator gave, one per machine, or fail naming each machine that cannot use its
    own, writing nothing. Never issues: the CA's key is the operator's. Exits the module."""
    params = module.params
    try:
        ca_cert = given[0] if given else pki.load_ca_certificate()
    except PkiDirError as exc:
        module.fail_json(msg=f"operator_certificates needs the CA that signed them, in ca_certificate or in "
                             f"{pki.ca_cert_path} ({exc}); nothing was changed", **base)
    texts, facts, problems = {}, {}, {}
    api_texts, api_facts = {}, {}
    # Entries of machines not in `machines` are left alone: a rotation passes only the members.
    for name in wanted:
        entry = params["operator_certificates"].get(name)
        if entry is None:
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("certificate"), str)
                and isinstance(entry.get("key"), str)
                and isinstance(entry.get("api_certificate", ""), str) and isinstance(entry.get("api_key", ""), str)
                and bool(entry.get("api_certificate")) == bool(entry.get("api_key"))):
            problems[name] = ("its entry is not {certificate: PEM text, key: PEM text} with, optionally, both "
                              "api_certificate and api_key")
            continue
        try:
            for part, label, into_texts, into_facts in (("", "", texts, facts),
                                                        ("api_", "API ", api_texts, api_facts)):
                if not entry.get(part + "certificate"):
                    continue
                # One newline at the end, as a PEM file has it (a variable's template may have dropped it).
                cert_pem, key_pem = (entry[part + kind].strip() + "\n" for kind in ("certificate", "key"))
                try:
                    into_facts[name] = given_certificate(cert_pem, key_pem, ca_cert)
                except ValueError as exc:
                    raise ValueError(f"the given {label}certificate {exc}") from None
                into_texts[name] = (cert_pem.encode(), key_pem.encode())
        except ValueError as exc:
            problems[name] = str(exc)
    problems.update(given_problems({n: s for n, s in wanted.items() if n not in problems}, facts, utc_now()))
    for name, problem in given_api_problems(wanted, facts, api_facts, utc_now()).items():
        problems.setdefault(name, problem)
    if problems:
        module.fail_json(
            msg=("The certificates given in operator_certificates cannot all be used, so nothing was written. "
                 + "; ".join(f"{name}: {problem}" for name, problem in sorted(problems.items()))
                 + ". Each machine needs its own certificate and key, signed by the given CA and naming at least "
                 "the hosts of its addresses, 127.0.0.1 and localhost."),
            **{**base, "ca": {**base["ca"], "action": "given"}, "problems": problems})
    # Written under --check too, like an adopted certificate: they exist already (in the variables) and the plays
    # that follow read them from these files. The deployment itself is unchanged: no change is reported.
    try:
        if given and not pki.given_ca_stored(*given):
            pki.write_pem(pki.ca_cert_path, pki.ca_key_path, params["ca_certificate"].strip().encode() + b"\n",
                          params["ca_key"].strip().encode() + b"\n" if params["ca_key"] else None)
        for api, pairs in ((False, texts), (True, api_texts)):
            for name, (cert_pem, key_pem) in pairs.items():
                paths = pki.machine_paths(name, api)
                if read_bytes(paths[0]) != cert_pem or read_bytes(paths[1]) != key_pem:
                    pki.write_pem(*paths, cert_pem, key_pem)
    except PkiDirError as exc:
        module.fail_json(msg=str(exc), **base)
    certificates = {}
    for name in sorted(wanted):
        api = name in api_facts
        api_paths = pki.machine_paths(name, api)
        certificates[name] = {"action": GIVEN, "certificate": pki.machine_paths(name)[0],
                              "key": pki.machine_paths(name)[1], "sans": sorted(wanted[name]),
                              "not_after": facts[name].not_after.isoformat(),
                              "api": {"action": GIVEN if api else MEMBER, "certificate": api_paths[0],
                                      "key": api_paths[1],
                                      "not_after": (api_facts if api else facts)[name].not_after.isoformat()}}
    fallback = sorted(set(wanted) - set(api_facts))
    if fallback:
        module.warn(f"No API certificate is given for {', '.join(fallback)} (api_certificate and api_key in "
                    "stateserver_tls_certificates), so their API servers serve the machine certificate. With x509 "
                    "member authentication its key is then a member's credential on the API server too "
                    "(docs/tls.md).")
    names = ", ".join(sorted(wanted))
    module.exit_json(changed=False, ca=dict(base["ca"], action=GIVEN), certificates=certificates, deployed=None,
                     msg=f"CA given; certificates given: {names}" if names else "CA given")


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def main() -> None:
    connection = connection_argument_spec()
    argument_spec = {key: connection[key] for key in PROBE_OPTIONS}
    argument_spec.update(
        secrets_dir={"type": "path", "required": True},
        machines={"type": "list", "elements": "dict", "required": True, "options": {
            "name": {"type": "str", "required": True},
            "mongo_address": {"type": "str", "required": True},
            "api_address": {"type": "str", "required": True},
        }},
        renew={"type": "bool", "default": False},
        renew_before_days={"type": "int", "default": 0},
        ca_certificate={"type": "str"},
        ca_key={"type": "str", "no_log": True},
        held={"type": "dict", "default": {}, "no_log": True},
        held_api={"type": "dict", "default": {}, "no_log": True},
        operator_certificates={"type": "dict", "default": {}, "no_log": True},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_by={"ca_key": "ca_certificate"})
    params = module.params
    base = {"changed": False, "ca": {}, "deployed": None}
    problem = machines_problem(params["machines"]) or check_connection(params)
    if not problem and not 0 <= params["renew_before_days"] <= CERT_DAYS:
        problem = f"renew_before_days must be from 0 to {CERT_DAYS}, got {params['renew_before_days']}"
    if problem:
        module.fail_json(msg=problem + "; nothing was changed", **base)
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR, **base)

    operator = params["operator_certificates"]
    if params["ca_certificate"] and not params["ca_key"] and not operator:
        module.fail_json(msg="ca_certificate without ca_key needs operator_certificates (without the CA's key no "
                             "certificate can be issued); nothing was changed", **base)
    given = None
    if params["ca_certificate"]:
        try:
            given = (load_given_ca(params["ca_certificate"], params["ca_key"]) if params["ca_key"]
                     else (load_given_ca_certificate(params["ca_certificate"]), None))
        except ValueError as exc:
            names = "ca_certificate and ca_key" if params["ca_key"] else "ca_certificate"
            module.fail_json(msg=f"The CA given in {names} {exc}; nothing was changed", **base)

    pki = PkiDir(params["secrets_dir"])
    base["ca"] = {"certificate": pki.ca_cert_path, "key": pki.ca_key_path}
    wanted = {m["name"]: machine_sans([m["mongo_address"], m["api_address"]]) for m in params["machines"]}
    if operator:
        use_operator_certificates(module, pki, given, wanted, base)
    try:
        if given and not pki.given_ca_stored(*given):
            # Written under --check too: it is the operator's CA, not a new one, and the plays that follow verify
            # the members with this file.
            pki.write_pem(pki.ca_cert_path, pki.ca_key_path, params["ca_certificate"].strip().encode() + b"\n",
                          params["ca_key"].strip().encode() + b"\n")
        ca = given or (pki.load_ca() if pki.ca_present() else None)
        deployed = None
        if ca is None:
            # Only here is a seed asked, so only here is pymongo loaded.
            answering = answering_members_or_fail(module, base)
            deployed = bool(answering)
        renewal = Renewal(utc_now(), params["renew_before_days"], params["renew"])
        # The machines' certificates, then their API servers' under the same rule (api=True).
        current, on_hosts, plans = {}, {}, {}
        for api, held_texts in ((False, params["held"]), (True, params["held_api"])):
            current[api] = {name: pki.held(name, ca[0], api) if ca else None for name in wanted
                            if pki.has_files(name, api)}
            on_hosts[api] = {name: held_on_host(pem, ca[0], api) for name, pem in held_texts.items()
                             if ca and name in wanted and current[api].get(name) is None and isinstance(pem, str)}
            plans[api] = plan_certificates(ca is not None, bool(deployed), wanted, current[api], renewal,
                                           {name: found and found[0] for name, found in on_hosts[api].items()})
        plan = plans[False]
        base["deployed"] = deployed
        if plan.ca == "missing":
            module.fail_json(
                msg=(f"Replica set {params['replica_set']!r} already exists ({', '.join(answering)} answered as its "
                     f"members), but its CA is not in {pki.path} (ca.crt, ca.key). Put the deployment's CA there; "
                     "a new one would not be trusted by the members and clients that have the old one, so none was "
                     "made."),
                **{**base, "ca": {**base["ca"], "action": "missing"}})
        changes = {api: [name for name, action in plans[api].machines.items() if action in (ISSUE, REISSUE)]
                   for api in plans}
        # Adopted ones are written under --check too: the machine already holds them, and the roles' tasks that
        # follow (a real run, or a check run's comparison) read the controller's copy.
        for api, api_plan in plans.items():
            for name in (name for name, action in api_plan.machines.items() if action == ADOPT):
                _held, cert_pem, key_pem = on_hosts[api][name]
                pki.write_pem(*pki.machine_paths(name, api), cert_pem.encode(), key_pem.encode())
                current[api][name] = pki.held(name, ca[0], api)
        if not module.check_mode:
            if plan.ca == ISSUE:
                ca = new_ca(params["replica_set"])
                pki.write(pki.ca_cert_path, pki.ca_key_path, *ca)
            for api, names in changes.items():
                for name in names:
                    cert, key = new_certificate(ca[0], ca[1], name, wanted[name], api)
                    pki.write(*pki.machine_paths(name, api), cert, key)
                    current[api][name] = pki.held(name, ca[0], api)
    except PkiDirError as exc:
        module.fail_json(msg=str(exc), **base)

    certificates = {}
    for name in plan.machines:
        files = {}
        for api in (False, True):
            cert_path, key_path = pki.machine_paths(name, api)
            held = current[api].get(name)
            files[api] = {"action": plans[api].machines[name], "certificate": cert_path, "key": key_path,
                          "not_after": held.not_after.isoformat() if held else None}
        certificates[name] = {**files[False], "sans": sorted(wanted[name]), "api": files[True]}
    ca_action = "given" if given else plan.ca
    parts = [f"CA {ca_action}"]
    for api, label in ((False, "certificates"), (True, "API certificates")):
        for action in ("adopted", "issued", "reissued"):
            names = [name for name, done in plans[api].machines.items() if done == action]
            if names:
                parts.append(f"{label} {action}: {', '.join(names)}")
    module.exit_json(changed=plan.ca == ISSUE or bool(changes[False] or changes[True]),
                     ca=dict(base["ca"], action=ca_action),
                     certificates=certificates, deployed=base["deployed"],
                     msg="; ".join(parts) + (" (check mode: nothing made)" if module.check_mode else ""))


if __name__ == "__main__":
    main()

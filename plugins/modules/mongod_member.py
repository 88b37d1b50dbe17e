#!/usr/bin/python
# ruff: noqa: EXE001 (ansible-test requires module files with a shebang to be non-executable)
# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: mongod_member
short_description: Bootstrap, step down or wait for the replica-set member on this host
version_added: 0.1.0
description:
  - Runs on a state machine and talks to the mongod there through a loopback address (O(login_host)), because
    bootstrapping relies on MongoDB's localhost exception, which lets a loopback connection initiate the set and
    create the first user before any user exists.
  - O(state=bootstrapped) initiates a one-member replica set whose member is tagged C(stateserver-machine) with
    O(machine), waits until it is the primary and creates the admin user (role C(root)) through the localhost
    exception. An initiated set is never initiated again; an admin who can log in is never created again. A member
    of another replica set is refused.
  - O(state=stepped_down) steps the member down when it is the primary and another voter exists, then waits until
    it is no longer the primary. The only voter is left as it is.
  - O(state=started) waits until the member answers; O(state=ready) until it is PRIMARY or SECONDARY. Both only
    read.
  - Growing the set is not this module's job; M(stateserver.ha.peergroup) adds the other members.
author:
  - stateserver.ha developers (@stateserver)
options:
  state:
    description:
      - The state the member should be in, see the description.
    type: str
    required: true
    choices: [bootstrapped, stepped_down, started, ready]
  login_host:
    description:
      - The address mongod answers on locally. A loopback address, so that the localhost exception applies.
    type: str
    default: 127.0.0.1
  port:
    description:
      - The port mongod listens on.
    type: int
    default: 37017
  replica_set:
    description:
      - The name of the replica set (the C(replication.replSetName) of the member's configuration).
    type: str
    default: stateserver
  login_user:
    description:
      - The admin user, which O(state=bootstrapped) creates and O(state=bootstrapped) and O(state=stepped_down)
        log in as.
    type: str
    default: admin
  login_password:
    description:
      - The admin user's password. Required for O(state=bootstrapped) and O(state=stepped_down).
    type: str
  member_host:
    description:
      - The member's V(host:port) as the replica set names it (the host's own address, not a loopback one).
        Required for O(state=bootstrapped).
    type: str
  machine:
    description:
      - The machine name the member is tagged with (tag C(stateserver-machine)). Required for
        O(state=bootstrapped).
    type: str
  tls:
    description:
      - Connect with TLS, as a member with C(net.tls.mode=requireTLS) demands. The member's certificate is verified
        against O(tls_ca_file) and must name O(login_host) (the deployment's certificates name V(127.0.0.1) and
        V(localhost)).
    type: bool
    default: false
  tls_ca_file:
    description:
      - The CA certificate, on the host, that signed the member's certificate. Required with O(tls=true).
    type: path
  timeout:
    description:
      - Seconds to wait for the member to become primary, to step down, to answer or to be ready.
    type: float
    default: 120
    aliases: [wait_timeout]
extends_documentation_fragment:
  - stateserver.ha.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads the member and reports the actions a real run would take in RV(actions); sends nothing and never
        waits. A member that does not answer is reported as such (RV(member.answering)), not as an error.
  diff_mode:
    support: none
  idempotent:
    support: full
requirements:
  - pymongo >= 4.6 for the Python that runs the module on the state machine
seealso:
  - module: stateserver.ha.peergroup
  - module: stateserver.ha.ensure_availability
"""

EXAMPLES = r"""
- name: Initiate the replica set on the first state machine and create the admin user
  stateserver.ha.mongod_member:
    state: bootstrapped
    member_host: "192.0.2.11:37017"
    machine: sm1
    login_user: admin
    login_password: "{{ mongod_admin_password }}"

- name: Hand the primary's role to another voter before a restart
  stateserver.ha.mongod_member:
    state: stepped_down
    login_password: "{{ mongod_admin_password }}"

- name: Wait until the restarted member is PRIMARY or SECONDARY again, over TLS
  stateserver.ha.mongod_member:
    state: ready
    tls: true
    tls_ca_file: /etc/mongod/tls/ca.crt
    timeout: 300

- name: Ask the member whether it is the primary, changing and awaiting nothing
  stateserver.ha.mongod_member:
    state: ready
  check_mode: true
  register: member

- name: Print it
  ansible.builtin.debug:
    msg: "{{ member.member.primary }}"
"""

RETURN = r"""
changed:
  description: Whether anything was (in check mode, would be) sent to the member.
  returned: always
  type: bool
  sample: true
actions:
  description: What was done, or in check mode what a real run would do, one sentence each, in order.
  returned: always
  type: list
  elements: str
  sample: ["initiate replica set stateserver with this member 192.0.2.11:37017 (machine sm1)",
           "create the admin user admin through the localhost exception"]
member:
  description: The member as its own C(hello) reply shows it at the end (in check mode, as found).
  returned: always
  type: dict
  contains:
    answering:
      description: Whether the member replied at all.
      type: bool
      sample: true
    initiated:
      description: Whether it is in a replica set.
      type: bool
      sample: true
    set_name:
      description: The name of its replica set, or null.
      type: str
      sample: stateserver
    primary:
      description: Whether it is the writable primary.
      type: bool
      sample: true
    secondary:
      description: Whether it is a secondary.
      type: bool
      sample: false
    host:
      description: Its own V(host:port) as the replica set names it, or null before the set exists.
      type: str
      sample: "192.0.2.11:37017"
msg:
  description: One line saying what was done, or why nothing was.
  returned: always
  type: str
  sample: "initiate replica set stateserver with this member 192.0.2.11:37017 (machine sm1)"
elapsed:
  description: Seconds the module spent, waiting included.
  returned: always
  type: float
  sample: 1.8
"""

import os
import socket
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from pymongo import MongoClient
    from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

    HAS_PYMONGO = True
    PYMONGO_IMPORT_ERROR = None
except ImportError:
    HAS_PYMONGO = False
    PYMONGO_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.stateserver.ha.plugins.module_utils._member import (
    ALREADY_INITIALIZED,
    AUTHENTICATION_FAILED,
    CREATE_ADMIN,
    EXCEEDED_TIME_LIMIT,
    INITIATE,
    PRIMARY_STEPPED_DOWN,
    STATES,
    STEP_DOWN,
    MemberError,
    MemberView,
    WaitTimeout,
    initiate_config,
    is_ready,
    member_view,
    plan_bootstrap,
    plan_step_down,
    readiness_message,
    validate_bootstrap_args,
    wait_until,
    waiting_for,
)
from ansible_collections.stateserver.ha.plugins.module_utils._model import MACHINE_TAG
from ansible_collections.stateserver.ha.plugins.module_utils._replset import exit_without_joining_monitors

# The member is on this host: a refused or silent connection is known within this time.
CONNECT_TIMEOUT = 2.0


class LocalMember:
    """The mongod on this host, reached directly through a loopback address: the module's only pymongo user."""

    def __init__(self, host: str, port: int, user: str, password: str | None, tls_ca_file: str | None = None) -> None:
        self.host, self.port, self.user, self.password = host, port, user, password
        self.tls_ca_file = tls_ca_file

    def _client(self, login: bool):
        kwargs = {"directConnection": True, "serverSelectionTimeoutMS": int(CONNECT_TIMEOUT * 1000),
                  "connectTimeoutMS": int(CONNECT_TIMEOUT * 1000), "appname": "stateserver.ha.mongod_member"}
        if self.tls_ca_file:
            kwargs.update(tls=True, tlsCAFile=self.tls_ca_file)
        if login:
            kwargs.update(username=self.user, password=self.password, authSource="admin")
        return MongoClient(self.host, self.port, **kwargs)

    def hello(self) -> dict | None:
        """The member's hello reply, or None when nothing answers (a TCP connect first, so a stopped mongod is
        known at once rather than after the driver's server selection timeout)."""
        try:
            socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT).close()
        except OSError:
            return None
        try:
            with self._client(login=False) as client:
                return client.admin.command("hello")
        except ConnectionFailure as exc:
            # A certificate that does not verify never gets better by waiting: say so instead of "not answering".
            if self.tls_ca_file and "certificate verify failed" in str(exc).lower():
                raise MemberError(f"mongod on {self.host}:{self.port} answers with a certificate that does not verify "
                                  f"against tls_ca_file {self.tls_ca_file} ({exc}); install the CA that signed it, "
                                  f"or a certificate that names {self.host}") from exc
            return None

    def view(self) -> MemberView:
        return member_view(self.hello())

    def admin_can_log_in(self) -> bool:
        try:
            with self._client(login=True) as client:
                client.admin.command("connectionStatus")
            return True
        except OperationFailure as exc:
            if exc.code == AUTHENTICATION_FAILED:  # no such user yet, or another password
                return False
            raise

    def voters(self) -> int:
        with self._client(login=True) as client:
            members = client.admin.command("replSetGetConfig")["config"]["members"]
        return sum(1 for m in members if m.get("votes", 1))

    def initiate(self, config: dict) -> None:
        with self._client(login=False) as client:
            try:
                client.admin.command("replSetInitiate", config)
            except OperationFailure as exc:
                if exc.code != ALREADY_INITIALIZED:  # an interrupted earlier run got this far: that is success
                    raise

    def create_admin(self) -> None:
        with self._client(login=False) as client:
            try:
                client.admin.command("createUser", self.user, pwd=self.password, roles=[{"role": "root", "db": "admin"}])
            except OperationFailure as exc:
                raise MemberError(
                    f"cannot log in as {self.user!r} and cannot create it through the localhost exception "
                    f"({exc.details.get('errmsg') if exc.details else exc}); users exist already, so the admin "
                    "password given is not the deployed one (check mongod_admin_password or the secrets directory)"
                ) from exc

    def step_down(self) -> None:
        with self._client(login=True) as client:
            try:
                client.admin.command("replSetStepDown", 60, secondaryCatchUpPeriodSecs=10)
            except ConnectionFailure:
                pass  # some servers close every connection as they step down: the wait below tells
            except OperationFailure as exc:
                if exc.code == EXCEEDED_TIME_LIMIT:
                    raise MemberError(f"the primary did not step down: no electable secondary caught up within "
                                      f"10 s ({exc}); check the secondaries' replication lag and retry") from exc
                if exc.code != PRIMARY_STEPPED_DOWN:
                    raise


def run(module: AnsibleModule, member: LocalMember, result: dict) -> None:
    """Observe, decide (module_utils._member), act unless in check mode, wait; fills `result` as it goes so a
    failure still reports what was done."""
    p = module.params
    state, timeout = p["state"], p["timeout"]

    def await_state(target: str) -> MemberView:
        return wait_until(member.view, lambda v: is_ready(v, target), timeout, waiting_for(target),
                          transient=(PyMongoError,))

    view = member.view()
    result["member"] = view.as_dict()
    if not view.answering and not module.check_mode:
        view = await_state("started")

    if state in ("started", "ready"):
        if not is_ready(view, state) and not module.check_mode:
            view = await_state(state)
        result["member"] = view.as_dict()
        result["msg"] = readiness_message(state, is_ready(view, state))
        return

    if state == "bootstrapped":
        if not view.answering:
            # Only in check mode: a host the run would install mongod on first is planned as a new member.
            module.warn(f"mongod does not answer on {p['login_host']}:{p['port']}; planned as a new member")
            can_log_in = False
        else:
            can_log_in = member.admin_can_log_in()
        actions = plan_bootstrap(view, can_log_in, p["replica_set"], p["member_host"], p["machine"], p["login_user"])
    else:
        # A member that does not answer (check mode only) is not the primary: there is nothing to step down.
        actions, why = plan_step_down(view, member.voters() if view.primary else 0)
        result["msg"] = why if view.answering else f"mongod does not answer on {p['login_host']}:{p['port']}"

    result["actions"] = [a.text for a in actions]
    result["changed"] = bool(actions)
    if module.check_mode or not actions:
        result["msg"] = "; ".join(result["actions"]) or result.get("msg") or "nothing to do"
        return
    for action in actions:
        if action.kind == INITIATE:
            member.initiate(initiate_config(p["replica_set"], p["member_host"], p["machine"], MACHINE_TAG))
            view = await_state("bootstrapped")
        elif action.kind == CREATE_ADMIN:
            if not view.primary:
                view = await_state("bootstrapped")
            member.create_admin()
            if not member.admin_can_log_in():
                raise MemberError(f"created user {p['login_user']!r} but cannot log in as it; check the member's log")
        elif action.kind == STEP_DOWN:
            member.step_down()
            view = await_state("stepped_down")
        result["member"] = view.as_dict()
    result["msg"] = "; ".join(result["actions"])


def main() -> None:
    exit_without_joining_monitors()
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "required": True, "choices": list(STATES)},
            "login_host": {"type": "str", "default": "127.0.0.1"},
            "port": {"type": "int", "default": 37017},
            "replica_set": {"type": "str", "default": "stateserver"},
            "login_user": {"type": "str", "default": "admin"},
            "login_password": {"type": "str", "no_log": True},
            "member_host": {"type": "str"},
            "machine": {"type": "str"},
            "tls": {"type": "bool", "default": False},
            "tls_ca_file": {"type": "path"},
            "timeout": {"type": "float", "default": 120, "aliases": ["wait_timeout"]},
        },
        required_if=[("state", "bootstrapped", ("login_password", "member_host", "machine")),
                     ("state", "stepped_down", ("login_password",)),
                     ("tls", True, ("tls_ca_file",))],
        supports_check_mode=True,
    )
    started = time.monotonic()
    result = {"changed": False, "actions": [], "member": member_view(None).as_dict(), "msg": "", "elapsed": 0.0}

    def fail(msg: str, **extra) -> None:
        # Every failure carries what was done before it (a re-run resumes from what it then observes).
        result.update(msg=msg, elapsed=round(time.monotonic() - started, 3))
        module.fail_json(**result, **extra)

    if module.params["timeout"] <= 0:
        fail(f"timeout must be a positive number of seconds, got {module.params['timeout']:g}")
    try:
        if module.params["state"] == "bootstrapped":
            validate_bootstrap_args(module.params["member_host"], module.params["machine"])
    except MemberError as exc:
        fail(str(exc))
    tls_ca_file = module.params["tls_ca_file"] if module.params["tls"] else None
    if tls_ca_file and not os.access(tls_ca_file, os.R_OK):
        fail(f"tls_ca_file {tls_ca_file!r} cannot be read on this host (missing, or no permission); give the CA "
             "certificate that signed the member's certificate")
    if not HAS_PYMONGO:
        fail(missing_required_lib("pymongo"), exception=PYMONGO_IMPORT_ERROR)

    member = LocalMember(module.params["login_host"], module.params["port"], module.params["login_user"],
                         module.params["login_password"], tls_ca_file)
    try:
        run(module, member, result)
    except (MemberError, WaitTimeout) as exc:
        fail(str(exc))
    except PyMongoError as exc:
        fail(f"{module.params['state']}: talking to mongod on {module.params['login_host']}:{module.params['port']} "
             f"failed: {exc}")
    result["elapsed"] = round(time.monotonic() - started, 3)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

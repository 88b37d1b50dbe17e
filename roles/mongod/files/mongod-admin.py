#!/usr/bin/env python3
"""Local administration of one replica-set member, run on the member itself by the mongod role.

It talks to the member through 127.0.0.1 because bootstrap relies on MongoDB's localhost exception (the first
user can only be created through a localhost connection). The admin password is read from standard input so it
never appears in a process list or an Ansible command line. Every command prints one JSON object.
"""

import argparse
import json
import sys
import time

from pymongo import MongoClient
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

REPLSET = "stateserver"
MACHINE_TAG = "stateserver-machine"


def client(port, user=None, password=None):
    kwargs = {"directConnection": True, "serverSelectionTimeoutMS": 5000, "connectTimeoutMS": 5000}
    if user:
        kwargs.update(username=user, password=password, authSource="admin")
    return MongoClient("127.0.0.1", port, **kwargs)


def hello(port):
    with client(port) as c:
        return c.admin.command("hello")


def wait_for(predicate, timeout, what):
    """Poll predicate() until it returns a true value or timeout seconds pass; fail with what was awaited."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except PyMongoError as exc:
            last = str(exc)
        time.sleep(1)
    raise SystemExit(json.dumps({"failed": True, "msg": f"timed out after {timeout}s waiting for {what}; last: {last}"}))


def cmd_state(args, _password):
    doc = hello(args.port)
    return {
        "changed": False,
        "initiated": bool(doc.get("setName")),
        "primary": bool(doc.get("isWritablePrimary")),
        "secondary": bool(doc.get("secondary")),
        "me": doc.get("me"),
        "primary_host": doc.get("primary"),
    }


def authenticated(port, user, password):
    try:
        with client(port, user, password) as c:
            c.admin.command("connectionStatus")
        return True
    except OperationFailure as exc:
        if exc.code == 18:  # AuthenticationFailed: the user does not exist yet, or the password differs
            return False
        raise


def cmd_bootstrap(args, password):
    changed = False
    doc = hello(args.port)
    if not doc.get("setName"):
        config = {
            "_id": REPLSET,
            "members": [{"_id": 0, "host": args.host, "tags": {MACHINE_TAG: args.machine}}],
        }
        with client(args.port) as c:
            try:
                c.admin.command("replSetInitiate", config)
            except OperationFailure as exc:
                if exc.code != 23:  # AlreadyInitialized: a previous, interrupted run got this far
                    raise
        changed = True
    wait_for(lambda: hello(args.port).get("isWritablePrimary"), args.timeout, "this member to become primary")
    if not authenticated(args.port, args.user, password):
        with client(args.port) as c:
            try:
                c.admin.command("createUser", args.user, pwd=password, roles=[{"role": "root", "db": "admin"}])
            except OperationFailure as exc:
                return {
                    "failed": True,
                    "msg": "cannot log in as {!r} and cannot create it through the localhost exception ({}); "
                    "users already exist, so the admin password given does not match the deployed one".format(
                        args.user, exc.details.get("errmsg") if exc.details else exc),
                }
        changed = True
    return {"changed": changed}


def cmd_stepdown(args, password):
    if not hello(args.port).get("isWritablePrimary"):
        return {"changed": False}
    with client(args.port, args.user, password) as c:
        members = c.admin.command("replSetGetConfig")["config"]["members"]
        if sum(1 for m in members if m.get("votes", 1)) < 2:
            return {"changed": False, "msg": "the only voter; restarted without a step-down"}
        try:
            c.admin.command("replSetStepDown", 60, secondaryCatchUpPeriodSecs=10)
        except ConnectionFailure:
            pass  # older servers close every connection when they step down
        except OperationFailure as exc:
            if exc.code == 189:  # PrimarySteppedDown is success on some versions
                pass
            elif exc.code == 262:  # ExceededTimeLimit: no electable secondary caught up
                return {"failed": True, "msg": f"the primary did not step down: {exc}"}
            else:
                raise
    wait_for(lambda: not hello(args.port).get("isWritablePrimary"), args.timeout, "the step-down to finish")
    return {"changed": True}


def cmd_wait_member(args, _password):
    def ready():
        doc = hello(args.port)
        if not args.member:
            return True  # not in the set yet: answering is all it can do
        return doc.get("isWritablePrimary") or doc.get("secondary")

    wait_for(ready, args.timeout, "this member to be PRIMARY or SECONDARY")
    return {"changed": False}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["state", "bootstrap", "stepdown", "wait-member"])
    parser.add_argument("--port", type=int, default=37017)
    parser.add_argument("--user", default="admin")
    parser.add_argument("--host", help="this member's host:port as the replica set names it (bootstrap)")
    parser.add_argument("--machine", help="the machine name for the stateserver-machine tag (bootstrap)")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--not-member", dest="member", action="store_false",
                        help="wait-member: the host is not in the set yet, so only wait until it answers")
    args = parser.parse_args()
    password = sys.stdin.readline().rstrip("\n") if args.command in ("bootstrap", "stepdown") else None
    handler = {
        "state": cmd_state,
        "bootstrap": cmd_bootstrap,
        "stepdown": cmd_stepdown,
        "wait-member": cmd_wait_member,
    }[args.command]
    try:
        result = handler(args, password)
    except PyMongoError as exc:
        result = {"failed": True, "msg": f"{args.command} failed: {exc}"}
    print(json.dumps(result))
    return 1 if result.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())

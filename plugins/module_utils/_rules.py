# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""MongoDB's replica-set config rules, checked before anything is sent. No I/O.

Each function returns a list of problems ([] when the config is acceptable), phrased for an operator.
"""

from __future__ import annotations

from ansible_collections.stateserver.ha.plugins.module_utils._model import (
    MAX_MEMBERS,
    MAX_VOTERS,
)

VALID_N = (3, 5, 7)
_LOCALHOSTS = ("localhost", "127.", "::1", "[::1]")


def validate_n(n) -> str | None:
    """None when n is a valid number of state machines, else a message naming n, the value and the valid values."""
    if isinstance(n, int) and not isinstance(n, bool) and n in VALID_N:
        return None
    return (f"n must be one of 3, 5 or 7 (an odd number of voters so votes cannot tie, and MongoDB allows at most "
            f"7 voting members); got n={n!r}")


def _host_key(host: str) -> str:
    return str(host).strip().lower()


def _is_localhost(host: str) -> bool:
    name = _host_key(host).rsplit(":", 1)[0] if not _host_key(host).startswith("[") else _host_key(host)
    return name.startswith(_LOCALHOSTS)


def _votes(doc: dict) -> int:
    return int(doc.get("votes", 1))


def _priority(doc: dict) -> float:
    default = 0.0 if (_votes(doc) == 0 or doc.get("arbiterOnly")) else 1.0
    return float(doc.get("priority", default))


def voting_ids(config: dict) -> set:
    return {m["_id"] for m in config.get("members", []) if _votes(m) > 0}


def validate_member(doc: dict) -> list[str]:
    where = f"member {doc.get('_id')!r} ({doc.get('host')!r})"
    errors = []
    if not isinstance(doc.get("_id"), int) or isinstance(doc.get("_id"), bool) or doc["_id"] < 0:
        errors.append(f"{where}: _id must be a non-negative integer")
    host = doc.get("host")
    if not isinstance(host, str) or not host.strip():
        errors.append(f"{where}: host must be a non-empty 'host:port' string")
    votes = doc.get("votes", 1)
    if votes not in (0, 1) or isinstance(votes, bool):
        errors.append(f"{where}: votes must be 0 or 1, got {votes!r}")
        return errors
    priority = _priority(doc)
    if not 0 <= priority <= 1000:
        errors.append(f"{where}: priority must be between 0 and 1000, got {priority!r}")
    if doc.get("arbiterOnly"):
        if votes != 1:
            errors.append(f"{where}: an arbiter must vote (cannot have 0 votes)")
        if priority != 0:
            errors.append(f"{where}: arbiter priority must be 0")
    elif priority > 0:
        if votes != 1:
            errors.append(f"{where}: priority must be 0 when non-voting (votes: 0)")
        if doc.get("hidden"):
            errors.append(f"{where}: priority must be 0 when hidden")
        if doc.get("secondaryDelaySecs", doc.get("slaveDelay", 0)):
            errors.append(f"{where}: priority must be 0 when secondaryDelaySecs is set")
        if doc.get("buildIndexes") is False:
            errors.append(f"{where}: priority must be 0 when buildIndexes is false")
    if "newlyAdded" in doc:
        errors.append(f"{where}: newlyAdded is managed by the server and may not be sent")
    return errors


def validate_config(config: dict) -> list[str]:
    """MongoDB's rules for one config on its own (ReplSetConfig validation)."""
    errors = []
    if not isinstance(config.get("_id"), str) or not config.get("_id"):
        errors.append("the replica set name (_id) must be a non-empty string")
    version = config.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        errors.append(f"version must be a positive integer, got {version!r}")
    members = config.get("members")
    if not isinstance(members, list) or not members:
        return errors + ["a replica set config needs at least one member"]
    if len(members) > MAX_MEMBERS:
        errors.append(f"a replica set can have at most {MAX_MEMBERS} members, this config has {len(members)}")
    for doc in members:
        errors.extend(validate_member(doc))
    if errors:
        return errors
    ids = [m["_id"] for m in members]
    hosts = [_host_key(m["host"]) for m in members]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        errors.append(f"member _id {dup} appears more than once")
    for dup in sorted({h for h in hosts if hosts.count(h) > 1}):
        errors.append(f"host {dup} appears more than once")
    voters = len(voting_ids(config))
    if not 1 <= voters <= MAX_VOTERS:
        errors.append(f"the number of voting members must be at least 1 and no more than {MAX_VOTERS}, "
                      f"this config has {voters}")
    if not any(_priority(m) > 0 and not m.get("arbiterOnly") for m in members):
        errors.append("the config must contain at least one non-arbiter member with priority > 0")
    local = {_is_localhost(m["host"]) for m in members}
    if len(local) > 1:
        errors.append("either all or none of the member hosts may be localhost addresses")
    return errors


def validate_reconfig(old: dict, new: dict, force: bool = False) -> list[str]:
    """MongoDB's rules for replacing config `old` with `new` (replSetReconfig)."""
    errors = validate_config(new)
    if old.get("_id") != new.get("_id"):
        errors.append(f"the replica set name cannot change ({old.get('_id')!r} -> {new.get('_id')!r})")
    if not force and isinstance(new.get("version"), int) and new["version"] <= int(old.get("version", 0)):
        errors.append(f"the new config version {new['version']} must be greater than the current "
                      f"version {old.get('version')}")
    old_by_host = {_host_key(m["host"]): m for m in old.get("members", [])}
    old_by_id = {m["_id"]: m for m in old.get("members", [])}
    for doc in new.get("members", []):
        before = old_by_host.get(_host_key(doc.get("host", "")))
        if before is not None and before["_id"] != doc.get("_id"):
            errors.append(f"host {doc['host']} must keep member _id {before['_id']} (got {doc.get('_id')}); "
                          "to change it, remove the member and add it again")
        same = old_by_id.get(doc.get("_id"))
        if same is not None:
            for key, default in (("arbiterOnly", False), ("buildIndexes", True)):
                if bool(same.get(key, default)) != bool(doc.get(key, default)):
                    errors.append(f"member {doc['_id']}: {key} cannot change; remove the member and add it again")
    if not force:
        changed = voting_ids(old) ^ voting_ids(new)
        if len(changed) > 1:
            errors.append("a non-force reconfig can add or remove at most 1 voting member; this one changes "
                          f"{len(changed)} (member _ids {sorted(changed)})")
    return errors

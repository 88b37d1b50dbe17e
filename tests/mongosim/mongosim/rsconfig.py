"""Replica-set config: defaults, MongoDB's validation rules for initiate and reconfig, and majorities."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from bson.int64 import Int64

from .errors import CommandError

MAX_MEMBERS = 50
MAX_VOTING = 7
MEMBER_FIELDS = {"_id", "host", "arbiterOnly", "buildIndexes", "hidden", "priority", "tags", "secondaryDelaySecs",
                 "votes", "slaveDelay", "horizons", "newlyAdded"}
TOP_FIELDS = {"_id", "version", "term", "members", "settings", "protocolVersion", "writeConcernMajorityJournalDefault",
              "configsvr"}


def _invalid(msg: str) -> CommandError:
    return CommandError("InvalidReplicaSetConfig", msg)


def normalize(cfg: dict, *, replica_set_id: ObjectId | None = None) -> dict:
    """Fill MongoDB's defaults and check field types; raises InvalidReplicaSetConfig."""
    if not isinstance(cfg, dict):
        raise _invalid("replica set config must be a document")
    for k in cfg:
        if k not in TOP_FIELDS:
            raise _invalid(f"Unexpected field {k} in replica set configuration")
    if not isinstance(cfg.get("_id"), str) or not cfg["_id"]:
        raise _invalid("Missing expected field \"_id\"")
    members = cfg.get("members")
    if not isinstance(members, list):
        raise _invalid("Missing expected field \"members\"")
    out: dict[str, Any] = {"_id": cfg["_id"], "version": int(cfg.get("version", 1)),
                           "term": int(cfg.get("term", 0))}
    if cfg.get("protocolVersion", 1) != 1:
        raise _invalid("Only protocolVersion 1 is supported")
    out["protocolVersion"] = Int64(1)
    out["writeConcernMajorityJournalDefault"] = bool(cfg.get("writeConcernMajorityJournalDefault", True))
    ms = []
    for m in members:
        if not isinstance(m, dict):
            raise _invalid("members must be documents")
        for k in m:
            if k not in MEMBER_FIELDS:
                raise _invalid(f"Unexpected field {k} in replica set member configuration")
        if "_id" not in m or not isinstance(m["_id"], (int, float)) or isinstance(m["_id"], bool):
            raise _invalid("Replica set member is missing a numeric \"_id\"")
        if not isinstance(m.get("host"), str) or not m["host"]:
            raise _invalid("Replica set member is missing \"host\"")
        arb = bool(m.get("arbiterOnly", False))
        prio = float(m.get("priority", 0.0 if arb else 1.0))
        if arb and prio == 1.0 and "priority" in m:
            prio = 0.0  # MongoDB silently normalises an arbiter's default priority
        votes = m.get("votes", 1)
        if votes not in (0, 1, True, False):
            raise _invalid(f"Replica set member {m['host']} has votes {votes}; votes must be 0 or 1")
        host = m["host"].lower()
        if ":" not in host:
            host += ":27017"
        nm = {"_id": int(m["_id"]), "host": host, "arbiterOnly": arb, "buildIndexes": bool(m.get("buildIndexes", True)),
              "hidden": bool(m.get("hidden", False)), "priority": prio, "tags": dict(m.get("tags", {})),
              "secondaryDelaySecs": Int64(int(m.get("secondaryDelaySecs", m.get("slaveDelay", 0)))),
              "votes": int(votes)}
        if m.get("newlyAdded"):
            nm["newlyAdded"] = True
        ms.append(nm)
    out["members"] = ms
    settings = dict(cfg.get("settings", {}))
    s = {"chainingAllowed": bool(settings.get("chainingAllowed", True)),
         "heartbeatIntervalMillis": int(settings.get("heartbeatIntervalMillis", 2000)),
         "heartbeatTimeoutSecs": int(settings.get("heartbeatTimeoutSecs", 10)),
         "electionTimeoutMillis": int(settings.get("electionTimeoutMillis", 10000)),
         "catchUpTimeoutMillis": int(settings.get("catchUpTimeoutMillis", -1)),
         "catchUpTakeoverDelayMillis": int(settings.get("catchUpTakeoverDelayMillis", 30000)),
         "getLastErrorModes": dict(settings.get("getLastErrorModes", {})),
         "getLastErrorDefaults": dict(settings.get("getLastErrorDefaults", {"w": 1, "wtimeout": 0})),
         "replicaSetId": settings.get("replicaSetId", replica_set_id or ObjectId())}
    if s["heartbeatIntervalMillis"] <= 0 or s["electionTimeoutMillis"] <= 0:
        raise _invalid("heartbeatIntervalMillis and electionTimeoutMillis must be positive")
    out["settings"] = s
    if cfg.get("configsvr"):
        out["configsvr"] = True
    return out


def validate(cfg: dict) -> None:
    """ReplSetConfig::_validate and MemberConfig rules (no I/O)."""
    ms = cfg["members"]
    if not 1 <= len(ms) <= MAX_MEMBERS:
        raise _invalid(f"Replica set configuration contains {len(ms)} members, but must have at least 1 and no more "
                       f"than {MAX_MEMBERS}")
    ids, hosts = set(), set()
    local = 0
    for m in ms:
        if m["_id"] in ids:
            raise _invalid(f"Found two member configurations with same _id field, members.{m['_id']}")
        if m["host"] in hosts:
            raise _invalid(f"Found two member configurations with same host field, {m['host']}")
        ids.add(m["_id"])
        hosts.add(m["host"])
        if m["host"].split(":")[0] in ("localhost", "127.0.0.1", "::1"):
            local += 1
        if m["arbiterOnly"]:
            if m["priority"] != 0:
                raise _invalid("Arbiter priority must be 0")
            if m["votes"] != 1:
                raise _invalid("Arbiter must vote (cannot have 0 votes)")
            if m["tags"]:
                raise _invalid("Cannot set tags on arbiters.")
        if m["priority"] < 0 or m["priority"] > 1000:
            raise _invalid("priority must be between 0 and 1000")
        if m["priority"] != 0:
            if m["votes"] == 0:
                raise _invalid(f"priority must be 0 when non-voting (votes:0); member {m['host']}")
            if m["hidden"]:
                raise _invalid(f"priority must be 0 when hidden=true; member {m['host']}")
            if m["secondaryDelaySecs"] > 0:
                raise _invalid(f"priority must be 0 when secondaryDelaySecs is used; member {m['host']}")
            if not m["buildIndexes"]:
                raise _invalid(f"priority must be 0 when buildIndexes=false; member {m['host']}")
    if 0 < local < len(ms):
        raise _invalid("Either all host names in a replica set configuration must be localhost references, or none "
                       "must be")
    voters = sum(1 for m in ms if m["votes"])
    if not 1 <= voters <= MAX_VOTING:
        raise _invalid(f"Replica set configuration contains {voters} voting members, but must be at least 1 and no "
                       f"more than {MAX_VOTING}")
    if not any(m["priority"] > 0 and not m["arbiterOnly"] for m in ms):
        raise _invalid("Replica set configuration must contain at least one non-arbiter member with priority > 0")
    if cfg["version"] < 1:
        raise _invalid("version field value of 0 is out of range")


def validate_reconfig(old: dict, new: dict, force: bool) -> None:
    """validateOldAndNewConfigsCompatible + validateSingleNodeChange (unless force)."""
    if new["_id"] != old["_id"]:
        raise CommandError("NewReplicaSetConfigurationIncompatible",
                           f"New and old configurations differ in replica set name; old was {old['_id']}, and new "
                           f"is {new['_id']}")
    if new["settings"]["replicaSetId"] != old["settings"]["replicaSetId"]:
        raise CommandError("NewReplicaSetConfigurationIncompatible",
                           "New and old configurations differ in replica set ID")
    if bool(old.get("configsvr")) and not new.get("configsvr"):
        raise CommandError("NewReplicaSetConfigurationIncompatible", "Cannot remove \"configsvr\" field")
    old_by_host = {m["host"]: m for m in old["members"]}
    old_by_id = {m["_id"]: m for m in old["members"]}
    for m in new["members"]:
        o = old_by_host.get(m["host"])
        if o is not None and o["_id"] != m["_id"]:
            raise CommandError("NewReplicaSetConfigurationIncompatible",
                               f"New and old configurations both have members with host of {m['host']} but in the "
                               f"new configuration the _id field is {m['_id']} and in the old configuration it is "
                               f"{o['_id']} for replica set {new['_id']}")
        o = old_by_id.get(m["_id"])
        if o is not None:
            if o["host"] != m["host"] and m["host"] in old_by_host:
                raise CommandError("NewReplicaSetConfigurationIncompatible",
                                   f"New and old configurations both have members with _id of {m['_id']} but "
                                   f"different hosts")
            if o["arbiterOnly"] != m["arbiterOnly"]:
                raise CommandError("NewReplicaSetConfigurationIncompatible",
                                   f"New and old configurations differ in the setting of the arbiterOnly field for "
                                   f"member {m['host']}; to make this change, remove then re-add the member")
            if o["buildIndexes"] != m["buildIndexes"]:
                raise CommandError("NewReplicaSetConfigurationIncompatible",
                                   f"New and old configurations differ in the setting of the buildIndexes field for "
                                   f"member {m['host']}; to make this change, remove then re-add the member")
    if not force:
        old_v = {m["_id"] for m in old["members"] if is_voter(m)}
        new_v = {m["_id"] for m in new["members"] if is_voter(m)}
        if len(old_v ^ new_v) > 1:
            raise _invalid("Non force replica set reconfig can only add or remove at most 1 voting member.")
        new_arbs = [m for m in new["members"] if m["arbiterOnly"] and m["_id"] not in old_by_id]
        if len(new_arbs) > 1:
            raise _invalid("Non force replica set reconfig can only add or remove at most 1 voting member.")


def is_voter(m: dict) -> bool:
    return bool(m["votes"]) and not m.get("newlyAdded")


def version_key(cfg: dict) -> tuple[int, int]:
    return int(cfg.get("version", 0)), int(cfg.get("term", -1))


def same_version(a: tuple, b: tuple) -> bool:
    """ConfigVersionAndTerm equality: a term of -1 (a force reconfig's) compares versions only."""
    if a[1] == -1 or b[1] == -1:
        return a[0] == b[0]
    return a == b


def newer(a: dict | tuple, b: dict | tuple | None) -> bool:
    """True when config ``a`` supersedes ``b`` (ConfigVersionAndTerm ordering)."""
    if b is None:
        return True
    av, at = a if isinstance(a, tuple) else version_key(a)
    bv, bt = b if isinstance(b, tuple) else version_key(b)
    if at == -1 or bt == -1:
        return av > bv
    return (at, av) > (bt, bv)


@dataclass(frozen=True)
class Majorities:
    voting: int
    majority_vote: int
    writable_voting: int
    write_majority: int


def majorities(cfg: dict) -> Majorities:
    voters = [m for m in cfg["members"] if is_voter(m)]
    arbiters = [m for m in voters if m["arbiterOnly"]]
    majority = len(voters) // 2 + 1
    writable = len(voters) - len(arbiters)
    return Majorities(len(voters), majority, writable, min(majority, writable))


def electable(m: dict) -> bool:
    return m["priority"] > 0 and not m["arbiterOnly"] and is_voter(m)


def to_wire(cfg: dict, include_newly_added: bool) -> dict:
    out = copy.deepcopy(cfg)
    for m in out["members"]:
        if not include_newly_added:
            m.pop("newlyAdded", None)
        m["priority"] = int(m["priority"]) if float(m["priority"]).is_integer() else m["priority"]
    return out

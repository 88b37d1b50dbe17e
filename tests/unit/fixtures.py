"""Small builders for replica-set documents and a toy replica set that applies planned steps (no server)."""

from __future__ import annotations

import datetime

from ansible_collections.stateserver.ha.plugins.module_utils._model import (
    MACHINE_TAG,
    MachineRecord,
    ReplSetView,
)

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
PRIMARY, SECONDARY, STARTUP2, DOWN = 1, 2, 5, 8
NAMES = {PRIMARY: "PRIMARY", SECONDARY: "SECONDARY", STARTUP2: "STARTUP2", DOWN: "(not reachable/healthy)"}


def addr(i: int) -> str:
    return f"10.0.0.{i}:37017"


def member(i: int, machine: str | None = None, votes: int = 1) -> dict:
    doc = {"_id": i, "host": addr(i), "votes": votes, "priority": 1.0 if votes else 0.0}
    if machine is not None:
        doc["tags"] = {MACHINE_TAG: machine}
    return doc


def config(members: list[dict], version: int = 1) -> dict:
    return {"_id": "stateserver", "version": version, "term": 1, "members": members}


def status(cfg: dict, states: dict, down_since: dict | None = None) -> dict:
    """states: member _id -> state (default SECONDARY); DOWN members get health 0."""
    down_since = down_since or {}
    members = []
    for m in cfg["members"]:
        state = states.get(m["_id"], SECONDARY)
        doc = {"_id": m["_id"], "name": m["host"], "health": 0 if state == DOWN else 1, "state": state,
               "stateStr": NAMES.get(state, "OTHER"), "configVersion": cfg["version"], "configTerm": 1,
               "uptime": 0 if state == DOWN else 3600, "self": state == PRIMARY}
        if m["_id"] in down_since:
            doc["lastHeartbeatRecv"] = NOW - datetime.timedelta(seconds=down_since[m["_id"]])
        members.append(doc)
    return {"set": "stateserver", "date": NOW, "myState": PRIMARY, "members": members}


def rec(name: str, i: int, wants: bool = True, address: str | None = None) -> MachineRecord:
    return MachineRecord(name, addr(i) if address is None else address, f"10.0.0.{i}:17070", wants)


def view(cfg: dict | None, states: dict | None = None, down_since: dict | None = None) -> ReplSetView:
    return ReplSetView(cfg, status(cfg, states or {}, down_since) if cfg else None, NOW)


def voting(cfg: dict) -> list[str]:
    """Machine names (or hosts) of the voting members, sorted."""
    return sorted((m.get("tags") or {}).get(MACHINE_TAG, m["host"]) for m in cfg["members"] if m.get("votes", 1))


class ToySet:
    """Applies planned steps the way a replica set would: new members start in STARTUP2 and catch up on `sync()`;
    a step-down elects another voter. Used to run the planner the way the convergence loop does."""

    def __init__(self, cfg: dict, states: dict):
        self.cfg = cfg
        self.states = {m["_id"]: states.get(m["_id"], SECONDARY) for m in cfg["members"]}

    def view(self) -> ReplSetView:
        return view(self.cfg, self.states)

    def apply(self, step) -> None:
        if step.config is None:
            old = next(i for i, s in self.states.items() if s == PRIMARY)
            self.states[old] = SECONDARY
            new = next(m["_id"] for m in step_down_candidates(self.cfg, self.states, old))
            self.states[new] = PRIMARY
            return
        self.cfg = step.config
        for m in self.cfg["members"]:
            self.states.setdefault(m["_id"], STARTUP2)
        kept = {m["_id"] for m in self.cfg["members"]}
        self.states = {i: s for i, s in self.states.items() if i in kept}

    def sync(self) -> None:
        self.states = {i: SECONDARY if s == STARTUP2 else s for i, s in self.states.items()}


def step_down_candidates(cfg: dict, states: dict, old: int) -> list[dict]:
    return [m for m in cfg["members"] if m["_id"] != old and m.get("votes", 1) and m.get("priority", 1) > 0
            and states.get(m["_id"]) == SECONDARY]

# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The one join of machine records, pool hosts, config members and member status. Pure functions, no I/O.

ha_status_info returns its rows and the table the playbooks print; peergroup's `members` result is the member half
of the same join. A member is matched to a machine by its stateserver-machine tag, or, untagged, by its address.
With TLS, `with_certificates` adds when the certificate served at each row's mongod and API address expires.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, replace

from ansible_collections.stateserver.ha.plugins.module_utils._model import (
    DOWN,
    MACHINE_TAG,
    PRIMARY,
    RECOVERING,
    STATE_NAMES,
    MachineRecord,
)

TABLE_COLUMNS = ("MACHINE", "ADDRESS", "WANTS-VOTE", "HAS-VOTE", "STATE", "PRIMARY", "API", "NOTE")
_WIDTHS = (10, 20, 11, 9, 14, 7, 4)
# Shown between API and NOTE only when some certificate was read (never with TLS off): days left of the sooner of
# the machine's two certificates, "!" once it is within the warning threshold.
CERT_COLUMN, CERT_WIDTH = "CERT", 8

RESYNC_NOTE = ("too stale to catch up: needs a resync (stop its mongod, empty its dbPath, start it; it then copies "
               "the data again)")


@dataclass(frozen=True)
class MemberState:
    """One config member joined with what replSetGetStatus says about it."""

    member_id: int
    host: str
    machine: str | None
    votes: int
    priority: float
    state: str
    health: int
    primary: bool
    note: str

    def summary(self) -> dict:
        """The member as peergroup returns it (RV members)."""
        return {"member_id": self.member_id, "host": self.host, "machine": self.machine, "votes": self.votes,
                "priority": self.priority, "state": self.state, "health": self.health}


@dataclass(frozen=True)
class CertificateExpiry:
    """When a served certificate expires, as seen at one moment against the warning threshold."""

    not_after: datetime.datetime
    days_left: float
    warning_days: int

    @property
    def expired(self) -> bool:
        return self.days_left <= 0

    @property
    def due(self) -> bool:
        """Expired, or expiring within the threshold: time to run rotate-certificates.yml."""
        return self.days_left < self.warning_days


def certificate_expiry(not_after: datetime.datetime, now: datetime.datetime, warning_days: int) -> CertificateExpiry:
    """`not_after` (aware) seen at `now` (aware)."""
    utc = not_after.astimezone(datetime.timezone.utc)  # noqa: UP017 (targets may run 3.8+)
    return CertificateExpiry(utc, (utc - now).total_seconds() / 86400, warning_days)


@dataclass(frozen=True)
class StatusRow:
    """One machine (or stray member) as ha_status_info reports it. None means "not known": no record, no member,
    for `api` (whether the machine's API server answered /v1/live) not asked, and for the certificates not read
    (TLS off, or nothing answered a handshake at that address). `api_address` is where the machine's API server is
    expected (the record's, else the pool host's); a member of no machine has none."""

    machine: str
    address: str
    wants_vote: bool | None
    has_vote: bool | None
    state: str
    primary: bool
    note: str
    api: bool | None = None
    api_address: str | None = None
    mongo_certificate: CertificateExpiry | None = None
    api_certificate: CertificateExpiry | None = None

    def as_dict(self) -> dict:
        return {"machine": self.machine, "address": self.address, "wants_vote": self.wants_vote,
                "has_vote": self.has_vote, "state": self.state, "primary": self.primary, "note": self.note,
                "api_answers": self.api}

    def certificate_dict(self) -> dict:
        """The certificates' expiry as ha_status_info returns it (ISO 8601 UTC and days left, None when unknown)."""
        out = {}
        for prefix, cert in (("mongo", self.mongo_certificate), ("api", self.api_certificate)):
            out[f"{prefix}_certificate_not_after"] = cert.not_after.isoformat() if cert else None
            out[f"{prefix}_certificate_days_left"] = round(cert.days_left, 2) if cert else None
        return out


def _state_name(entry: dict | None) -> str:
    if entry is None:
        return "UNKNOWN"
    if entry.get("health") == 0:
        # mongod shows "(not reachable/healthy)" for an unreachable member; its state number says DOWN.
        return STATE_NAMES[DOWN]
    state = entry.get("state")
    return STATE_NAMES.get(state) or str(entry.get("stateStr") or "UNKNOWN")


def _note(entry: dict | None, host: str, stale: frozenset) -> str:
    if host in stale:
        return RESYNC_NOTE
    if entry is None:
        return "not in the replica set status yet"
    if entry.get("health") == 0:
        message = entry.get("lastHeartbeatMessage")
        return f"unreachable ({message})" if message else "unreachable"
    if entry.get("state") == RECOVERING:
        return "recovering: not readable and not promoted until it is a SECONDARY"
    return ""


def member_states(config: dict | None, status: dict | None, stale: frozenset = frozenset()) -> list[MemberState]:
    """Every config member (by _id) with its state as the answering node sees it; `stale` holds the hosts that
    say they are too stale to catch up (replSetGetStatus `tooStale` on the member itself)."""
    entries = {m.get("name"): m for m in (status or {}).get("members", [])}
    out = []
    for doc in sorted((config or {}).get("members", []), key=lambda m: m["_id"]):
        entry = entries.get(doc["host"])
        votes = int(doc.get("votes", 1))
        out.append(MemberState(
            member_id=int(doc["_id"]),
            host=doc["host"],
            machine=(doc.get("tags") or {}).get(MACHINE_TAG),
            votes=votes,
            priority=float(doc.get("priority", 1.0 if votes else 0.0)),
            state=_state_name(entry),
            health=int((entry or {}).get("health", 0)),
            primary=bool(entry and entry.get("state") == PRIMARY and entry.get("health", 1) == 1),
            note=_note(entry, doc["host"], stale),
        ))
    return out


def _pool_address(entry: dict) -> str:
    return str(entry.get("mongo_address") or entry.get("address") or "")


def status_rows(records: list[MachineRecord], config: dict | None, status: dict | None, pool: list[dict] = (),
                stale: frozenset = frozenset(), api_answers: dict[str, bool] | None = None) -> list[StatusRow]:
    """One row per machine: pool hosts in pool order, then recorded machines not in the pool (by name), then
    members that belong to no machine (by member _id).

    A machine's member is the one tagged with its name, else an untagged member at its recorded address. State is
    the member's state; a machine that is not a member is a 'spare' ('no replica set' before the set is initiated).
    `api_answers` maps API addresses (the record's, else the pool entry's api_address) to whether that API server
    answered; a row whose address it does not hold (or every row, when it is None) has api None.
    """
    members = member_states(config, status, stale)
    by_tag = {m.machine: m for m in members if m.machine}
    by_host = {m.host.lower(): m for m in members if not m.machine}
    recs = {r.name: r for r in records}
    names = [str(p.get("name")) for p in pool]
    names += [r.name for r in sorted(records, key=lambda r: r.name) if r.name not in names]
    addresses = {str(p.get("name")): _pool_address(p) for p in pool}
    apis = {str(p.get("name")): p.get("api_address") for p in pool}
    apis.update({r.name: r.api_address for r in records})
    answers = api_answers or {}
    outside = "spare" if config is not None else "no replica set"
    rows, used = [], set()
    for name in names:
        record = recs.get(name)
        member = by_tag.get(name)
        if member is None and record is not None:
            member = by_host.get(record.mongo_address.lower())
        if member is not None:
            used.add(member.member_id)
            rows.append(StatusRow(name, member.host, record.wants_vote if record else None, member.votes > 0,
                                  member.state, member.primary,
                                  member.note if record else _join(member.note, "no machine record"),
                                  answers.get(apis.get(name)), apis.get(name)))
        else:
            address = record.mongo_address if record else addresses.get(name, "")
            rows.append(StatusRow(name, address, record.wants_vote if record else None, None, outside, False, "",
                                  answers.get(apis.get(name)), apis.get(name)))
    for member in members:
        if member.member_id not in used:
            note = "no machine record" if member.machine else "not a state machine (no tag, no record at its address)"
            rows.append(StatusRow(member.machine or member.host, member.host, None, member.votes > 0, member.state,
                                  member.primary, _join(member.note, note)))
    return rows


def with_certificates(rows: list[StatusRow], served: dict[str, CertificateExpiry]) -> list[StatusRow]:
    """The rows with the expiry of the certificate served at each one's mongod address and API address (`served`
    maps host:port to it), and a note on those that are due."""
    out = []
    for row in rows:
        mongo = served.get(row.address)
        api = served.get(row.api_address) if row.api_address else None
        out.append(replace(row, mongo_certificate=mongo, api_certificate=api,
                           note=_join(row.note, _expiry_note(mongo, api))))
    return out


def _expiry_note(mongo: CertificateExpiry | None, api: CertificateExpiry | None) -> str:
    # A machine's mongod and API server normally serve the same certificate: one sentence for both then.
    due: dict[datetime.datetime, list[str]] = {}
    for label, cert in (("mongod", mongo), ("API", api)):
        if cert is not None and cert.due:
            due.setdefault(cert.not_after, []).append(label)
    if not due:
        return ""
    sentences = []
    for not_after, labels in due.items():
        cert = mongo if mongo is not None and mongo.not_after == not_after else api
        whose = " and ".join(labels)
        if cert.expired:
            sentences.append(f"the {whose} certificate EXPIRED on {not_after.date().isoformat()}")
        else:
            days = math.floor(cert.days_left)
            when = "within a day" if days < 1 else f"in {days} day{'s' if days > 1 else ''}"
            sentences.append(f"the {whose} certificate expires {when} ({not_after.date().isoformat()})")
    return "; ".join(sentences) + ": renew it with rotate-certificates.yml"


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _certificate_cell(row: StatusRow) -> str:
    known = [c for c in (row.mongo_certificate, row.api_certificate) if c is not None]
    if not known:
        return "-"
    sooner = min(known, key=lambda c: c.not_after)
    if sooner.expired:
        return "EXPIRED"
    return f"{math.floor(sooner.days_left)}d" + ("!" if sooner.due else "")


def status_table(rows: list[StatusRow]) -> list[str]:
    """The rows as fixed-width text lines, header first (what the playbooks print); the CERT column only when some
    row carries a certificate."""
    certificates = any(r.mongo_certificate or r.api_certificate for r in rows)
    widths = (*_WIDTHS, CERT_WIDTH) if certificates else _WIDTHS

    def line(cells) -> str:
        padded = [f"{cell:<{width}}" for cell, width in zip(cells, widths)] + list(cells[len(widths):])
        return " ".join(padded).rstrip()
    header = list(TABLE_COLUMNS)
    if certificates:
        header.insert(-1, CERT_COLUMN)
    lines = [line(header)]
    for row in rows:
        cells = [row.machine, row.address, _cell(row.wants_vote), _cell(row.has_vote), row.state,
                 "*" if row.primary else "", _cell(row.api)]
        if certificates:
            cells.append(_certificate_cell(row))
        lines.append(line([*cells, row.note]))
    return lines

# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Backups of the state database: what a backup holds, whether one is intact, which to keep. No I/O here.

A backup is a directory named `stateserver-<UTC time>` holding one BSON file per collection (the documents one
after another, as mongodump writes them) and `manifest.json`, which names the replica set, the point in time the
copy was read at, and per collection its file, document count and sha256. The modules read and write the files;
these functions decide.
"""

from __future__ import annotations

import datetime
import hashlib
import re

# Bumped when the layout changes; a restore refuses any other value instead of guessing.
FORMAT = "stateserver.ha/state-backup/1"
MANIFEST = "manifest.json"
# The control plane's one database: the API server's units and kv, and the collection's machine records.
DATABASE = "stateserver"
# Machine records describe the machines of the deployment that wrote them; a set deployed anew has its own.
RECORDS = "machines"
_NAME = re.compile(r"^stateserver-(\d{8}T\d{6}\d{6}Z)$")
_COLLECTION = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
# Member states from replSetGetStatus.
_PRIMARY, _SECONDARY = 1, 2


class SourceError(Exception):
    """No member may be read from; the message says which members were considered and why not."""


def backup_name(now: datetime.datetime) -> str:
    """The directory name of a backup taken at `now` (UTC); names sort in time order."""
    return "stateserver-" + now.strftime("%Y%m%dT%H%M%S%fZ")


def is_backup_name(name: str) -> bool:
    return bool(_NAME.match(name))


def file_name(collection: str) -> str:
    return f"{DATABASE}.{collection}.bson"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def choose_source(status: dict, allow_primary: bool) -> str:
    """The member to read from: the healthy SECONDARY that has applied the most, else (if allowed) the primary.

    Raises SourceError when there is none, naming each member's state so the operator sees why.
    """
    members = status.get("members") or []
    secondaries = [m for m in members if m.get("health") == 1 and m.get("state") == _SECONDARY]
    if secondaries:
        # The most advanced secondary has the freshest majority snapshot; the name breaks ties for repeatability.
        best = max(secondaries, key=lambda m: (_optime_key(m.get("optime")), [-ord(c) for c in m["name"]]))
        return best["name"]
    primaries = [m for m in members if m.get("health") == 1 and m.get("state") == _PRIMARY]
    seen = ", ".join(f"{m.get('name')} {m.get('stateStr', m.get('state'))}" for m in members) or "no members"
    if allow_primary and primaries:
        return primaries[0]["name"]
    hint = "" if allow_primary else " (set allow_primary to read from the primary instead)"
    raise SourceError(f"no healthy SECONDARY to read the backup from{hint}; members: {seen}")


def majority_point(status: dict) -> dict:
    """The member's majority-committed optime ({ts, t}) from its replSetGetStatus.

    On the primary it covers every write acknowledged with w:majority so far. Raises SourceError when absent.
    """
    optime = (status.get("optimes") or {}).get("readConcernMajorityOpTime")
    if not isinstance(optime, dict) or optime.get("ts") is None:
        raise SourceError(f"the status of replica set {status.get('set')!r} has no majority-committed optime")
    return optime


def reached(optime: dict, target: dict) -> bool:
    """Whether `optime` is at or after `target` (term first, then timestamp, as mongod orders optimes)."""
    return _optime_key(optime) >= _optime_key(target)


def _optime_key(optime) -> tuple:
    if not isinstance(optime, dict) or optime.get("ts") is None:
        return (0, 0, 0)
    ts = optime["ts"]
    return (int(optime.get("t", 0)), ts.time, ts.inc)


def build_manifest(*, set_name: str, set_id: str, config_version: int, source: str, optime: dict,
                   created: datetime.datetime, files: dict[str, bytes], counts: dict[str, int],
                   indexes: dict[str, list[dict]]) -> dict:
    """The manifest of a backup whose collection files are `files` (collection -> BSON bytes).

    `optime` is {ts: [seconds, increment], t: term}: the majority-committed point every collection was read at.
    """
    return {
        "format": FORMAT,
        "created": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "replica_set": set_name,
        "replica_set_id": set_id,
        "config_version": int(config_version),
        "source": source,
        "optime": optime,
        "database": DATABASE,
        "collections": {
            name: {"file": file_name(name), "count": int(counts[name]), "sha256": sha256(data),
                   "bytes": len(data), "indexes": indexes.get(name, [])}
            for name, data in sorted(files.items())
        },
    }


def manifest_problems(manifest) -> list[str]:
    """What makes `manifest` unusable (another format, missing or mistyped fields), empty when it is usable."""
    if not isinstance(manifest, dict):
        return [f"{MANIFEST} is not a JSON object"]
    if manifest.get("format") != FORMAT:
        return [f"{MANIFEST} has format {manifest.get('format')!r}; this collection reads {FORMAT!r} only"]
    problems = []
    if manifest.get("database") != DATABASE:
        problems.append(f"{MANIFEST} is of database {manifest.get('database')!r}, not {DATABASE!r}")
    collections = manifest.get("collections")
    if not isinstance(collections, dict):
        return [*problems, f"{MANIFEST} has no collections object"]
    for name, entry in sorted(collections.items()):
        if not _COLLECTION.match(name) or name.startswith("system."):
            problems.append(f"collection name {name!r} is not one a backup writes")
            continue
        if not isinstance(entry, dict) or entry.get("file") != file_name(name) \
                or not isinstance(entry.get("count"), int) or entry["count"] < 0 \
                or not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("indexes", []), list):
            problems.append(f"collection {name!r}: the entry needs file {file_name(name)!r}, a count and a sha256")
    return problems


def file_problems(manifest: dict, files: dict[str, bytes | None], decode, invalid: type[Exception]) -> list[str]:
    """Check every collection file against a usable manifest.

    `files` maps each file name the manifest lists to its bytes (None when missing); `decode` turns BSON bytes
    into documents (bson.decode_all) and raises `invalid` (bson.errors.BSONError) on bytes that are not BSON.
    """
    problems = []
    for name, entry in sorted(manifest["collections"].items()):
        data = files.get(entry["file"])
        if data is None:
            problems.append(f"{entry['file']} is missing")
            continue
        if sha256(data) != entry["sha256"]:
            problems.append(f"{entry['file']} does not match its sha256 in {MANIFEST} (changed or truncated)")
            continue
        try:
            count = len(decode(data))
        except invalid as exc:
            problems.append(f"{entry['file']} is not valid BSON: {exc}")
            continue
        if count != entry["count"]:
            problems.append(f"{entry['file']} holds {count} documents, {MANIFEST} says {entry['count']}")
    return problems


def restore_collections(manifest: dict, include_records: bool) -> list[str]:
    """The collections a restore writes: all of the backup's, the machine records only when asked for."""
    return [name for name in sorted(manifest["collections"]) if include_records or name != RECORDS]


def occupied(counts: dict[str, int], collections: list[str]) -> list[str]:
    """The collections of `collections` that already hold documents on the target (counts: name -> documents)."""
    return [f"{name} ({counts[name]} documents)" for name in collections if counts.get(name, 0) > 0]


def retention(names: list[str], retain: int, new: str | None = None) -> tuple[list[str], list[str]]:
    """(kept, removed) among the backup directories `names` plus `new`: the newest `retain` are kept.

    Names that are not backup names are neither kept nor removed (they are not ours to delete).
    """
    if retain < 1:
        raise ValueError(f"retain must be at least 1, got {retain}")
    ours = sorted({n for n in [*names, *([new] if new else [])] if is_backup_name(n)}, reverse=True)
    return ours[:retain], sorted(ours[retain:])

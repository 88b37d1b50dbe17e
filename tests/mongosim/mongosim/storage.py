"""In-memory collections rebuilt from the oplog, plus the on-disk journal and node state in dbPath.

Every change to data is an oplog entry; the data is the replay of the oplog. The oplog is kept in an
append-only BSON journal (``oplog.bson``); node metadata (config, term, vote) in ``state.bson``,
rewritten atomically. SIGKILL keeps whatever was written to the OS; ``sync()`` fsyncs for j/majority.
"""
from __future__ import annotations

import copy
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import bson.errors

from .errors import WriteError
from .query import hashable, index_key, matches

ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}


class Collection:
    def __init__(self, name: str) -> None:
        self.name = name
        self.docs: dict[Any, dict] = {}
        self.indexes: dict[str, dict] = {"_id_": dict(ID_INDEX)}
        self.unique: dict[str, dict[tuple, Any]] = {}
        self.options: dict = {}

    def find(self, flt: dict | None) -> Iterator[dict]:
        if flt and set(flt) == {"_id"} and not (isinstance(flt["_id"], dict)
                                                 and any(str(k).startswith("$") for k in flt["_id"])):
            doc = self.docs.get(hashable(flt["_id"]))
            if doc is not None:
                yield doc
            return
        for doc in list(self.docs.values()):
            if matches(doc, flt):
                yield doc

    def check_unique(self, doc: dict, replacing: dict | None = None) -> None:
        """Raise DuplicateKey when ``doc`` collides with another document in a unique index."""
        ns = self.name
        key = hashable(doc.get("_id"))
        if replacing is None and key in self.docs:
            raise _dup(ns, "_id_", {"_id": doc.get("_id")})
        for name, idx in self.indexes.items():
            if not idx.get("unique") or name == "_id_":
                continue
            k = index_key(doc, idx["key"])
            owner = self.unique.get(name, {}).get(k)
            if owner is not None and owner != key:
                raise _dup(ns, name, {f: v[1] if isinstance(v, tuple) else v for f, v in zip(idx["key"], k)})

    def put(self, doc: dict) -> None:
        key = hashable(doc["_id"])
        old = self.docs.get(key)
        if old is not None:
            self._unindex(old)
        self.docs[key] = doc
        for name, idx in self.indexes.items():
            if idx.get("unique") and name != "_id_":
                self.unique.setdefault(name, {})[index_key(doc, idx["key"])] = key

    def remove(self, id_value: Any) -> None:
        old = self.docs.pop(hashable(id_value), None)
        if old is not None:
            self._unindex(old)

    def _unindex(self, doc: dict) -> None:
        key = hashable(doc["_id"])
        for name, idx in self.indexes.items():
            if idx.get("unique") and name != "_id_":
                m = self.unique.get(name, {})
                k = index_key(doc, idx["key"])
                if m.get(k) == key:
                    del m[k]

    def add_index(self, spec: dict) -> None:
        self.indexes[spec["name"]] = spec
        if spec.get("unique") and spec["name"] != "_id_":
            m: dict[tuple, Any] = {}
            for key, doc in self.docs.items():
                m[index_key(doc, spec["key"])] = key
            self.unique[spec["name"]] = m


def _dup(ns: str, index: str, key: dict) -> WriteError:
    shown = ", ".join(f"{k}: {v!r}" for k, v in key.items())
    return WriteError("DuplicateKey", f"E11000 duplicate key error collection: {ns} index: {index} dup key: "
                      f"{{ {shown} }}", extra={"keyPattern": {k: 1 for k in key}, "keyValue": key})


class Store:
    """Databases → collections, and the retryable-write session table, all derived from the oplog."""

    def __init__(self) -> None:
        self.dbs: dict[str, dict[str, Collection]] = {}
        # lsid-id key -> (txnNumber, {stmtId: result summary})
        self.sessions: dict[Any, tuple[int, dict[int, Any]]] = {}

    def coll(self, db: str, name: str, create: bool = False) -> Collection | None:
        d = self.dbs.get(db)
        if d is None or name not in d:
            if not create:
                return None
            c = Collection(f"{db}.{name}")
            self.dbs.setdefault(db, {})[name] = c
            return c
        return d[name]

    def apply(self, e: dict) -> None:
        """Apply one oplog entry (idempotent for i/u/d)."""
        op = e["op"]
        ns = e.get("ns", "")
        db, _, cname = ns.partition(".")
        if op == "i" or op == "u":
            self.coll(db, cname, True).put(copy.deepcopy(e["o"]))
        elif op == "d":
            c = self.coll(db, cname)
            if c is not None:
                c.remove(e["o"]["_id"])
        elif op == "c":
            self._apply_command(db, e["o"])
        if "lsid" in e and "txnNumber" in e:
            key = hashable(e["lsid"].get("id"))
            txn = int(e["txnNumber"])
            cur = self.sessions.get(key)
            if cur is None or cur[0] != txn:
                cur = (txn, {})
                self.sessions[key] = cur
            cur[1][int(e.get("stmtId", 0))] = e.get("res", True)

    def _apply_command(self, db: str, o: dict) -> None:
        name = next(iter(o))
        if name == "create":
            c = self.coll(db, o["create"], True)
            c.options = {k: v for k, v in o.items() if k != "create"}
        elif name == "drop":
            self.dbs.get(db, {}).pop(o["drop"], None)
        elif name == "dropDatabase":
            self.dbs.pop(db, None)
        elif name == "createIndexes":
            c = self.coll(db, o["createIndexes"], True)
            for spec in o["indexes"]:
                c.add_index(dict(spec))
        elif name == "dropIndexes":
            c = self.coll(db, o["dropIndexes"])
            if c is not None:
                for idx in o["names"]:
                    c.indexes.pop(idx, None)
                    c.unique.pop(idx, None)

    def retried(self, lsid: dict, txn: int, stmt: int) -> Any:
        """The stored result when this (session, txnNumber, stmtId) was already applied, else None."""
        cur = self.sessions.get(hashable(lsid.get("id")))
        if cur is None or cur[0] != txn:
            return None
        return cur[1].get(stmt)

    def session_txn(self, lsid: dict) -> int | None:
        cur = self.sessions.get(hashable(lsid.get("id")))
        return None if cur is None else cur[0]


class Journal:
    """Append-only file of BSON oplog entries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = open(path, "ab")  # noqa: SIM115 - kept open for the process lifetime

    def load(self) -> list[dict]:
        data = self.path.read_bytes()
        out: list[dict] = []
        pos = 0
        while pos + 4 <= len(data):
            (size,) = struct.unpack_from("<i", data, pos)
            if size < 5 or pos + size > len(data):
                break
            try:
                out.append(bson.decode(data[pos:pos + size]))
            except bson.errors.InvalidBSON:
                break
            pos += size
        if pos != len(data):
            # A torn tail from a kill mid-write: drop it (it was never acknowledged).
            self.f.close()
            with open(self.path, "r+b") as f:
                f.truncate(pos)
            self.f = open(self.path, "ab")  # noqa: SIM115
        return out

    def append(self, entries: list[dict]) -> None:
        self.f.write(b"".join(bson.encode(e) for e in entries))
        self.f.flush()

    def sync(self) -> None:
        os.fdatasync(self.f.fileno())

    def rewrite(self, entries: list[dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(bson.encode(e) for e in entries))
            f.flush()
            os.fsync(f.fileno())
        self.f.close()
        os.replace(tmp, self.path)
        self.f = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        try:
            self.f.flush()
            os.fsync(self.f.fileno())
        finally:
            self.f.close()


def save_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(bson.encode(state))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(path: Path) -> dict:
    if not path.exists():
        return {}
    return bson.decode(path.read_bytes())

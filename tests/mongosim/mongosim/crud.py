"""CRUD commands: insert, find/getMore/killCursors, update, delete, findAndModify, count, distinct,
aggregate, indexes, collections and databases. Writes run synchronously on the event loop (atomic),
produce oplog entries, then wait for the write concern."""
from __future__ import annotations

import copy
import itertools
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from bson.int64 import Int64

from .errors import CommandError, WriteError
from .query import (
    apply_update,
    is_operator_update,
    matches,
    project,
    sort_docs,
    upsert_seed,
)
from .storage import ID_INDEX, Store

if TYPE_CHECKING:
    from .server import Connection, Server

_cursor_ids = itertools.count(1000)
RESERVED_DBS = {"local"}


def _ns(db: str, coll: Any) -> str:
    if not isinstance(coll, str) or not coll:
        raise CommandError("InvalidNamespace", f"Invalid namespace specified '{db}.{coll}'")
    return f"{db}.{coll}"


class Crud:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.cursors: dict[int, dict] = {}

    @property
    def node(self) -> Any:
        return self.server.node

    # ---- writes ----------------------------------------------------------------------------------

    def _retry_info(self, body: dict) -> tuple[dict | None, int | None]:
        lsid, txn = body.get("lsid"), body.get("txnNumber")
        if lsid is None or txn is None:
            return None, None
        return lsid, int(txn)

    def _stmt_ids(self, body: dict, n: int) -> list[int]:
        if "stmtIds" in body:
            return [int(x) for x in body["stmtIds"]]
        base = int(body.get("stmtId", 0))
        return [base + i for i in range(n)]

    def _check_txn(self, lsid: dict | None, txn: int | None) -> None:
        if lsid is None or txn is None:
            return
        cur = self.node.store.session_txn(lsid)
        if cur is not None and txn < cur:
            raise CommandError("BadValue", f"txnNumber {txn} is less than last txnNumber {cur} seen in session",
                               extra={"code": 225, "codeName": "TransactionTooOld"})

    async def insert(self, conn: Connection, db: str, body: dict) -> dict:
        coll_name = body["insert"]
        ns = _ns(db, coll_name)
        docs = body.get("documents", [])
        ordered = body.get("ordered", True)
        lsid, txn = self._retry_info(body)
        self.server.require_writable(db, body)
        self._check_txn(lsid, txn)
        stmts = self._stmt_ids(body, len(docs))
        entries: list[dict] = []
        errors: list[dict] = []
        n = 0
        store = self.node.store
        coll = store.coll(db, coll_name)
        pending_ids: set = set()
        if coll is None:
            entries.append({"op": "c", "ns": f"{db}.$cmd", "o": {"create": coll_name}})
        for i, doc in enumerate(docs):
            if lsid is not None and store.retried(lsid, txn, stmts[i]) is not None:
                n += 1
                continue
            doc = dict(doc)
            if "_id" not in doc:
                doc = {"_id": ObjectId(), **doc}
            try:
                if coll is not None:
                    coll.check_unique(doc)
                from .query import hashable
                k = hashable(doc["_id"])
                if k in pending_ids:
                    raise WriteError("DuplicateKey", f"E11000 duplicate key error collection: {ns} index: _id_ "
                                     f"dup key: {{ _id: {doc['_id']!r} }}")
                pending_ids.add(k)
            except WriteError as e:
                errors.append(e.to_doc(i))
                if ordered:
                    break
                continue
            e2: dict[str, Any] = {"op": "i", "ns": ns, "o": doc}
            if lsid is not None:
                e2.update(lsid=lsid, txnNumber=Int64(txn), stmtId=stmts[i], res=True)
            entries.append(e2)
            n += 1
            if coll is not None and any(ix.get("unique") and name != "_id_" for name, ix in coll.indexes.items()):
                # Later documents in this batch must see this one for unique checks.
                self.node.log_ops(entries)
                entries = []
        return await self._finish(body, entries, {"n": n}, errors)

    async def _finish(self, body: dict, entries: list[dict], reply: dict, errors: list[dict]) -> dict:
        node = self.node
        term = node.term
        optime = node.log_ops(entries) if entries else node.applied
        if errors:
            reply["writeErrors"] = errors
        wce = await node.await_write_concern(optime, self.server.write_concern(body), term)
        if wce:
            labels = wce.pop("errorLabels", None)
            reply["writeConcernError"] = wce
            if labels and body.get("txnNumber") is not None:
                reply["errorLabels"] = labels
        reply["ok"] = 1.0
        return reply

    async def update(self, conn: Connection, db: str, body: dict) -> dict:
        coll_name = body["update"]
        ns = _ns(db, coll_name)
        ups = body.get("updates", [])
        ordered = body.get("ordered", True)
        lsid, txn = self._retry_info(body)
        self.server.require_writable(db, body)
        self._check_txn(lsid, txn)
        stmts = self._stmt_ids(body, len(ups))
        n = n_mod = 0
        upserted: list[dict] = []
        errors: list[dict] = []
        for i, u in enumerate(ups):
            if lsid is not None:
                prev = self.node.store.retried(lsid, txn, stmts[i])
                if prev is not None:
                    if isinstance(prev, dict):
                        n += prev.get("n", 0)
                        n_mod += prev.get("nModified", 0)
                        if "upserted" in prev:
                            upserted.append({"index": i, "_id": prev["upserted"]})
                    continue
            try:
                res, entries = self._update_one_stmt(db, coll_name, ns, u)
            except WriteError as e:
                errors.append(e.to_doc(i))
                if ordered:
                    break
                continue
            if lsid is not None:
                if not entries:
                    entries = [{"op": "n", "ns": ns, "o": {"msg": "retryable no-op"}}]
                entries[-1].update(lsid=lsid, txnNumber=Int64(txn), stmtId=stmts[i], res=res)
            if entries:
                self.node.log_ops(entries)
            n += res["n"]
            n_mod += res["nModified"]
            if "upserted" in res:
                upserted.append({"index": i, "_id": res["upserted"]})
        reply: dict[str, Any] = {"n": n, "nModified": n_mod}
        if upserted:
            reply["upserted"] = upserted
        return await self._finish(body, [], reply, errors)

    def _update_one_stmt(self, db: str, coll_name: str, ns: str, u: dict) -> tuple[dict, list[dict]]:
        q = u.get("q", {})
        upd = u.get("u", {})
        multi = u.get("multi", False)
        upsert = u.get("upsert", False)
        if multi and not is_operator_update(upd):
            raise WriteError("FailedToParse", "multi update is not supported for replacement-style update")
        coll = self.node.store.coll(db, coll_name)
        matched = list(coll.find(q)) if coll is not None else []
        if not multi:
            matched = matched[:1]
        entries: list[dict] = []
        n_mod = 0
        for doc in matched:
            new = apply_update(doc, upd)
            coll.check_unique(new, replacing=doc)
            if new != doc:
                n_mod += 1
                entries.append({"op": "u", "ns": ns, "o2": {"_id": doc["_id"]}, "o": new})
        if matched:
            return {"n": len(matched), "nModified": n_mod}, entries
        if not upsert:
            return {"n": 0, "nModified": 0}, entries
        seed = upsert_seed(q)
        new = apply_update(seed, upd, inserting=True) if is_operator_update(upd) else apply_update(seed, upd)
        if "_id" not in new:
            new = {"_id": seed.get("_id", ObjectId()), **new}
        if coll is None:
            entries.append({"op": "c", "ns": f"{db}.$cmd", "o": {"create": coll_name}})
        else:
            coll.check_unique(new)
        entries.append({"op": "i", "ns": ns, "o": new})
        return {"n": 1, "nModified": 0, "upserted": new["_id"]}, entries

    async def delete(self, conn: Connection, db: str, body: dict) -> dict:
        coll_name = body["delete"]
        ns = _ns(db, coll_name)
        dels = body.get("deletes", [])
        lsid, txn = self._retry_info(body)
        self.server.require_writable(db, body)
        self._check_txn(lsid, txn)
        stmts = self._stmt_ids(body, len(dels))
        n = 0
        for i, d in enumerate(dels):
            if lsid is not None:
                prev = self.node.store.retried(lsid, txn, stmts[i])
                if prev is not None:
                    n += prev.get("n", 0) if isinstance(prev, dict) else 0
                    continue
            coll = self.node.store.coll(db, coll_name)
            matched = list(coll.find(d.get("q", {}))) if coll is not None else []
            if d.get("limit", 0) == 1:
                matched = matched[:1]
            entries = [{"op": "d", "ns": ns, "o": {"_id": doc["_id"]}} for doc in matched]
            if lsid is not None:
                if not entries:
                    entries = [{"op": "n", "ns": ns, "o": {"msg": "retryable no-op"}}]
                entries[-1].update(lsid=lsid, txnNumber=Int64(txn), stmtId=stmts[i], res={"n": len(matched)})
            if entries:
                self.node.log_ops(entries)
            n += len(matched)
        return await self._finish(body, [], {"n": n}, [])

    async def find_and_modify(self, conn: Connection, db: str, body: dict) -> dict:
        coll_name = body.get("findAndModify", body.get("findandmodify"))
        ns = _ns(db, coll_name)
        lsid, txn = self._retry_info(body)
        self.server.require_writable(db, body)
        self._check_txn(lsid, txn)
        if lsid is not None:
            prev = self.node.store.retried(lsid, txn, 0)
            if prev is not None:
                return await self._finish(body, [], dict(prev), [])
        q = body.get("query", {})
        coll = self.node.store.coll(db, coll_name)
        matched = sort_docs(list(coll.find(q)) if coll is not None else [], body.get("sort"))[:1]
        entries: list[dict] = []
        value = None
        last_err: dict[str, Any] = {"n": 0}
        try:
            if body.get("remove"):
                if matched:
                    value = matched[0]
                    entries.append({"op": "d", "ns": ns, "o": {"_id": value["_id"]}})
                    last_err = {"n": 1}
            else:
                upd = body.get("update", {})
                if matched:
                    old = matched[0]
                    new = apply_update(old, upd)
                    coll.check_unique(new, replacing=old)
                    entries.append({"op": "u", "ns": ns, "o2": {"_id": old["_id"]}, "o": new})
                    value = new if body.get("new") else old
                    last_err = {"n": 1, "updatedExisting": True}
                elif body.get("upsert"):
                    seed = upsert_seed(q)
                    new = apply_update(seed, upd, inserting=True)
                    if "_id" not in new:
                        new = {"_id": ObjectId(), **new}
                    if coll is None:
                        entries.append({"op": "c", "ns": f"{db}.$cmd", "o": {"create": coll_name}})
                    else:
                        coll.check_unique(new)
                    entries.append({"op": "i", "ns": ns, "o": new})
                    value = new if body.get("new") else None
                    last_err = {"n": 1, "updatedExisting": False, "upserted": new["_id"]}
                else:
                    last_err = {"n": 0, "updatedExisting": False}
        except WriteError as e:
            raise CommandError(e.code_name, e.message, extra=e.extra) from None
        if value is not None and body.get("fields"):
            value = project(value, body["fields"])
        reply = {"lastErrorObject": last_err, "value": copy.deepcopy(value)}
        if lsid is not None:
            if not entries:
                entries = [{"op": "n", "ns": ns, "o": {"msg": "retryable no-op"}}]
            entries[-1].update(lsid=lsid, txnNumber=Int64(txn), stmtId=0, res=dict(reply))
        return await self._finish(body, entries, reply, [])

    # ---- reads -----------------------------------------------------------------------------------

    async def _store_for_read(self, body: dict) -> Store:
        rc = body.get("readConcern") or {}
        if rc.get("level") == "snapshot":
            return (await self._snapshot(body))[0]
        if rc.get("level") == "majority" and self.node.opts.repl_set:
            return await self.node.read_majority_store()
        return self.node.store

    async def _snapshot(self, body: dict) -> tuple[Store, Any]:
        """readConcern snapshot outside a transaction (mongod 5.0+): find, aggregate and distinct on a replica set."""
        if not self.node.opts.repl_set:
            raise CommandError("IllegalOperation", "Cannot use non-local read concern until replica set is "
                               "finished initializing.")
        rc = body["readConcern"]
        return await self.node.read_snapshot_store(rc.get("atClusterTime"), body.get("maxTimeMS"))

    def _cursor_reply(self, ns: str, docs: list[dict], batch_size: int | None, first: bool = True,
                      single: bool = False) -> dict:
        size = 101 if batch_size is None else batch_size
        if size == 0 and first:
            batch, rest = [], docs
        else:
            batch, rest = docs[:size or len(docs)], docs[size or len(docs):]
        cid = 0
        if rest and not single:
            cid = next(_cursor_ids)
            self.cursors[cid] = {"ns": ns, "docs": rest}
        return {"cursor": {"firstBatch" if first else "nextBatch": batch, "id": Int64(cid), "ns": ns}, "ok": 1.0}

    async def find(self, conn: Connection, db: str, body: dict) -> dict:
        coll_name = body["find"]
        ns = _ns(db, coll_name)
        self.server.require_readable(body)
        at = None
        if (body.get("readConcern") or {}).get("level") == "snapshot":
            store, at = await self._snapshot(body)
        else:
            store = await self._store_for_read(body)
        coll = store.coll(db, coll_name)
        docs = [copy.deepcopy(d) for d in coll.find(body.get("filter"))] if coll is not None else []
        docs = sort_docs(docs, body.get("sort"))
        skip = int(body.get("skip", 0) or 0)
        limit = int(body.get("limit", 0) or 0)
        docs = docs[skip:]
        if limit:
            docs = docs[:abs(limit)]
        docs = [project(d, body.get("projection")) for d in docs]
        reply = self._cursor_reply(ns, docs, body.get("batchSize"), single=bool(body.get("singleBatch")))
        if at is not None:
            # mongod names the snapshot's time so a driver's snapshot session reads every later batch there.
            reply["cursor"]["atClusterTime"] = at
        return reply

    async def get_more(self, conn: Connection, db: str, body: dict) -> dict:
        cid = int(body["getMore"])
        cur = self.cursors.get(cid)
        if cur is None:
            raise CommandError("CursorNotFound", f"cursor id {cid} not found")
        size = body.get("batchSize") or len(cur["docs"])
        batch, rest = cur["docs"][:size], cur["docs"][size:]
        if rest:
            cur["docs"] = rest
        else:
            del self.cursors[cid]
            cid = 0
        return {"cursor": {"nextBatch": batch, "id": Int64(cid), "ns": cur["ns"]}, "ok": 1.0}

    async def kill_cursors(self, conn: Connection, db: str, body: dict) -> dict:
        killed, missing = [], []
        for cid in body.get("cursors", []):
            if self.cursors.pop(int(cid), None) is not None:
                killed.append(cid)
            else:
                missing.append(cid)
        return {"cursorsKilled": killed, "cursorsNotFound": missing, "cursorsAlive": [], "cursorsUnknown": [],
                "ok": 1.0}

    async def count(self, conn: Connection, db: str, body: dict) -> dict:
        self.server.require_readable(body)
        store = await self._store_for_read(body)
        coll = store.coll(db, body["count"])
        docs = list(coll.find(body.get("query"))) if coll is not None else []
        docs = docs[int(body.get("skip", 0) or 0):]
        if body.get("limit"):
            docs = docs[:abs(int(body["limit"]))]
        return {"n": len(docs), "ok": 1.0}

    async def distinct(self, conn: Connection, db: str, body: dict) -> dict:
        from .query import compare, get_path
        self.server.require_readable(body)
        store = await self._store_for_read(body)
        coll = store.coll(db, body["distinct"])
        out: list = []
        for d in (coll.find(body.get("query")) if coll is not None else []):
            for v in get_path(d, body["key"]):
                for x in (v if isinstance(v, list) else [v]):
                    if not any(compare(x, y) == 0 for y in out):
                        out.append(x)
        return {"values": out, "ok": 1.0}

    async def aggregate(self, conn: Connection, db: str, body: dict) -> dict:
        self.server.require_readable(body)
        coll_name = body["aggregate"]
        store = await self._store_for_read(body)
        if coll_name == 1:
            raise CommandError("InvalidNamespace", "collection-less aggregate is not supported by the simulator")
        coll = store.coll(db, coll_name)
        docs = [copy.deepcopy(d) for d in coll.find(None)] if coll is not None else []
        for stage in body.get("pipeline", []):
            (name, arg), = stage.items()
            if name == "$match":
                docs = [d for d in docs if matches(d, arg)]
            elif name == "$sort":
                docs = sort_docs(docs, arg)
            elif name == "$limit":
                docs = docs[:int(arg)]
            elif name == "$skip":
                docs = docs[int(arg):]
            elif name == "$count":
                docs = [{arg: len(docs)}] if docs else []
            elif name == "$project":
                docs = [project(d, arg) for d in docs]
            elif name == "$group":
                docs = _group(docs, arg)
            else:
                raise CommandError("BadValue", f"Unrecognized pipeline stage name: '{name}' (the simulator "
                                   "supports $match, $sort, $limit, $skip, $count, $project, simple $group)")
        batch = (body.get("cursor") or {}).get("batchSize")
        return self._cursor_reply(_ns(db, coll_name), docs, batch)

    # ---- DDL -------------------------------------------------------------------------------------

    async def create(self, conn: Connection, db: str, body: dict) -> dict:
        name = body["create"]
        self.server.require_writable(db, body)
        if self.node.store.coll(db, name) is not None:
            raise CommandError("NamespaceExists", f"Collection {db}.{name} already exists.")
        return await self._finish(body, [{"op": "c", "ns": f"{db}.$cmd", "o": {"create": name}}], {}, [])

    async def create_indexes(self, conn: Connection, db: str, body: dict) -> dict:
        name = body["createIndexes"]
        self.server.require_writable(db, body)
        coll = self.node.store.coll(db, name)
        before = len(coll.indexes) if coll is not None else 1
        entries: list[dict] = []
        if coll is None:
            entries.append({"op": "c", "ns": f"{db}.$cmd", "o": {"create": name}})
        new_specs = []
        for spec in body.get("indexes", []):
            spec = dict(spec)
            spec.setdefault("v", 2)
            if "key" not in spec or "name" not in spec:
                raise CommandError("BadValue", "index specification must contain 'key' and 'name'")
            if coll is not None and spec["name"] in coll.indexes:
                continue
            if spec.get("unique") and coll is not None:
                from .query import index_key
                seen: dict = {}
                for d in coll.docs.values():
                    k = index_key(d, spec["key"])
                    if k in seen:
                        raise CommandError("DuplicateKey", f"E11000 duplicate key error collection: {db}.{name} "
                                           f"index: {spec['name']}")
                    seen[k] = True
            new_specs.append(spec)
        if new_specs:
            entries.append({"op": "c", "ns": f"{db}.$cmd", "o": {"createIndexes": name, "indexes": new_specs}})
        reply = {"numIndexesBefore": before, "numIndexesAfter": before + len(new_specs),
                 "createdCollectionAutomatically": coll is None}
        if not new_specs:
            reply["note"] = "all indexes already exist"
        return await self._finish(body, entries, reply, [])

    async def list_indexes(self, conn: Connection, db: str, body: dict) -> dict:
        coll = self.node.store.coll(db, body["listIndexes"])
        if coll is None:
            raise CommandError("NamespaceNotFound", f"ns does not exist: {db}.{body['listIndexes']}")
        return self._cursor_reply(f"{db}.$cmd.listIndexes", list(coll.indexes.values()), None)

    async def drop_indexes(self, conn: Connection, db: str, body: dict) -> dict:
        name = body.get("dropIndexes", body.get("deleteIndexes"))
        self.server.require_writable(db, body)
        coll = self.node.store.coll(db, name)
        if coll is None:
            raise CommandError("NamespaceNotFound", f"ns not found {db}.{name}")
        which = body.get("index")
        names = [n for n in coll.indexes if n != "_id_"] if which == "*" else (
            which if isinstance(which, list) else [which])
        if isinstance(which, dict):
            names = [n for n, s in coll.indexes.items() if s["key"] == which]
        for n in names:
            if n not in coll.indexes or n == "_id_":
                raise CommandError("IndexNotFound" if False else "BadValue", f"index not found with name [{n}]")
        before = len(coll.indexes)
        return await self._finish(body, [{"op": "c", "ns": f"{db}.$cmd", "o": {"dropIndexes": name, "names": names}}],
                                  {"nIndexesWas": before}, [])

    async def drop(self, conn: Connection, db: str, body: dict) -> dict:
        name = body["drop"]
        self.server.require_writable(db, body)
        coll = self.node.store.coll(db, name)
        if coll is None:
            raise CommandError("NamespaceNotFound", "ns not found")
        n = len(coll.indexes)
        return await self._finish(body, [{"op": "c", "ns": f"{db}.$cmd", "o": {"drop": name}}],
                                  {"nIndexesWas": n, "ns": f"{db}.{name}"}, [])

    async def drop_database(self, conn: Connection, db: str, body: dict) -> dict:
        self.server.require_writable(db, body)
        entries = [{"op": "c", "ns": f"{db}.$cmd", "o": {"dropDatabase": 1}}] if db in self.node.store.dbs else []
        return await self._finish(body, entries, {"dropped": db}, [])

    async def list_collections(self, conn: Connection, db: str, body: dict) -> dict:
        out = []
        for name, coll in sorted(self.node.store.dbs.get(db, {}).items()):
            info = {"name": name, "type": "collection", "options": coll.options,
                    "info": {"readOnly": False}, "idIndex": dict(ID_INDEX)}
            if matches(info, body.get("filter")):
                out.append({"name": name} if body.get("nameOnly") else info)
        return self._cursor_reply(f"{db}.$cmd.listCollections", out, None)

    async def list_databases(self, conn: Connection, db: str, body: dict) -> dict:
        dbs = []
        for name, colls in sorted(self.node.store.dbs.items()):
            if not colls:
                continue
            size = sum(len(c.docs) for c in colls.values()) * 100
            entry = {"name": name, "sizeOnDisk": Int64(size), "empty": size == 0}
            if matches(entry, body.get("filter")):
                dbs.append({"name": name} if body.get("nameOnly") else entry)
        if "local" not in [d["name"] for d in dbs] and not body.get("filter"):
            dbs.append({"name": "local"} if body.get("nameOnly") else
                       {"name": "local", "sizeOnDisk": Int64(len(self.node.oplog) * 100), "empty": False})
        return {"databases": dbs, "totalSize": Int64(sum(d.get("sizeOnDisk", 0) for d in dbs)), "ok": 1.0}

    # ---- server-side API for Security (replicated writes) -------------------------------------

    async def apply_local_write(self, db: str, coll_name: str, op: dict) -> dict:
        body: dict[str, Any] = {"writeConcern": {"w": "majority", "wtimeout": 30000}}
        if "insert" in op:
            body.update(insert=coll_name, documents=[op["insert"]])
            r = await self.insert(None, db, body)  # type: ignore[arg-type]
        elif "update" in op:
            body.update(update=coll_name, updates=[{"q": op["update"], "u": op["u"],
                                                    "upsert": bool(op.get("upsert"))}])
            r = await self.update(None, db, body)  # type: ignore[arg-type]
        elif "delete" in op:
            body.update(delete=coll_name, deletes=[{"q": op["delete"], "limit": 0}])
            r = await self.delete(None, db, body)  # type: ignore[arg-type]
        else:
            raise CommandError("BadValue", f"unknown local write {op!r}")
        if r.get("writeErrors"):
            e = r["writeErrors"][0]
            raise CommandError(e.get("codeName", "BadValue"), e["errmsg"])
        return r


def _field_value(doc: dict, expr: Any) -> Any:
    from .query import get_path
    if isinstance(expr, str) and expr.startswith("$"):
        vals = get_path(doc, expr[1:])
        return vals[0] if vals else None
    return expr


def _group(docs: list[dict], spec: dict) -> list[dict]:
    """$group with a constant or "$field" _id and $sum/$min/$max/$first/$last/$push accumulators."""
    from .query import hashable
    groups: dict[Any, dict] = {}
    for d in docs:
        key = _field_value(d, spec.get("_id"))
        g = groups.setdefault(hashable(key), {"_id": key})
        for out, acc in spec.items():
            if out == "_id":
                continue
            (op, expr), = acc.items()
            v = _field_value(d, expr)
            if op == "$sum":
                g[out] = g.get(out, 0) + (v if isinstance(v, (int, float)) and not isinstance(v, bool) else 0)
            elif op == "$push":
                g.setdefault(out, []).append(v)
            elif op == "$first":
                g.setdefault(out, v)
            elif op == "$last":
                g[out] = v
            elif op in ("$min", "$max"):
                from .query import compare
                if out not in g or (compare(v, g[out]) < 0) == (op == "$min"):
                    g[out] = v
            else:
                raise CommandError("BadValue", f"accumulator {op} is not supported by the simulator")
    return list(groups.values())

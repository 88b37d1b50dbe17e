"""Query matching, update operators, sorting and projection over plain BSON documents (dicts)."""
from __future__ import annotations

import copy
import datetime
import re
from typing import Any

from bson import ObjectId
from bson.binary import Binary
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.regex import Regex
from bson.timestamp import Timestamp

from .errors import WriteError

_MISSING = object()


def type_rank(v: Any) -> int:
    """BSON comparison order of types (MongoDB's canonical type ranking)."""
    if isinstance(v, MinKey):
        return 1
    if v is None or v is _MISSING:
        return 2
    if isinstance(v, bool):
        return 40
    if isinstance(v, (int, float, Int64)):
        return 10
    if isinstance(v, str):
        return 15
    if isinstance(v, dict):
        return 20
    if isinstance(v, list):
        return 25
    if isinstance(v, (bytes, Binary)):
        return 30
    if isinstance(v, ObjectId):
        return 35
    if isinstance(v, datetime.datetime):
        return 45
    if isinstance(v, Timestamp):
        return 47
    if isinstance(v, (Regex, re.Pattern)):
        return 50
    if isinstance(v, MaxKey):
        return 127
    return 100


def compare(a: Any, b: Any) -> int:
    ra, rb = type_rank(a), type_rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == 20:
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            if ka != kb:
                return -1 if ka < kb else 1
            c = compare(va, vb)
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    if ra == 25:
        for va, vb in zip(a, b):
            c = compare(va, vb)
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    if ra in (1, 2, 127):
        return 0
    if ra == 45:
        a = a.replace(tzinfo=None)
        b = b.replace(tzinfo=None)
    if ra == 47:
        a, b = (a.time, a.inc), (b.time, b.inc)
    if ra == 50:
        return 0
    try:
        return (a > b) - (a < b)
    except TypeError:
        return 0


class Key:
    """Sort key wrapper applying BSON ordering."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: Key) -> bool:
        return compare(self.v, other.v) < 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and compare(self.v, other.v) == 0


def get_path(doc: Any, path: str) -> list[Any]:
    """All values at a dotted path, expanding arrays as MongoDB does; empty when missing."""
    parts = path.split(".")
    cur = [doc]
    for i, part in enumerate(parts):
        nxt: list[Any] = []
        for c in cur:
            if isinstance(c, dict):
                if part in c:
                    nxt.append(c[part])
            elif isinstance(c, list):
                if part.isdigit() and int(part) < len(c):
                    nxt.append(c[int(part)])
                else:
                    for el in c:
                        if isinstance(el, dict) and part in el:
                            nxt.append(el[part])
        cur = nxt
        if not cur:
            return []
    return cur


def _candidates(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        out.append(v)
        if isinstance(v, list):
            out.extend(v)
    return out


def _eq(values: list[Any], target: Any) -> bool:
    if not values:
        return target is None
    return any(compare(v, target) == 0 and type_rank(v) == type_rank(target) for v in _candidates(values))


def _regex_match(v: Any, pattern: Any, options: str = "") -> bool:
    if not isinstance(v, str):
        return False
    if isinstance(pattern, Regex):
        pattern = pattern.try_compile()
    if isinstance(pattern, re.Pattern):
        return pattern.search(v) is not None
    flags = 0
    for ch in options:
        flags |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}.get(ch, 0)
    return re.search(pattern, v, flags) is not None


def _op(values: list[Any], op: str, arg: Any, spec: dict) -> bool:
    cands = _candidates(values)
    if op == "$eq":
        return _eq(values, arg)
    if op == "$ne":
        return not _eq(values, arg)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        def ok(v: Any) -> bool:
            if type_rank(v) != type_rank(arg):
                return False
            c = compare(v, arg)
            return {"$gt": c > 0, "$gte": c >= 0, "$lt": c < 0, "$lte": c <= 0}[op]
        return any(ok(v) for v in cands)
    if op == "$in":
        return any(_regex_match(v, a) for a in arg if isinstance(a, (Regex, re.Pattern)) for v in cands) or any(
            _eq(values, a) for a in arg if not isinstance(a, (Regex, re.Pattern)))
    if op == "$nin":
        return not any(_eq(values, a) for a in arg)
    if op == "$exists":
        return bool(values) == bool(arg)
    if op == "$regex":
        return any(_regex_match(v, arg, spec.get("$options", "")) for v in cands)
    if op == "$options":
        return True
    if op == "$size":
        return any(isinstance(v, list) and len(v) == arg for v in values)
    if op == "$not":
        if isinstance(arg, dict):
            return not all(_op(values, k, a, arg) for k, a in arg.items())
        return not any(_regex_match(v, arg) for v in cands)
    if op == "$elemMatch":
        for v in values:
            if isinstance(v, list):
                for el in v:
                    if isinstance(el, dict) and not any(k.startswith("$") for k in arg) and matches(el, arg):
                        return True
                    if any(k.startswith("$") for k in arg) and all(_op([el], k, a, arg) for k, a in arg.items()):
                        return True
        return False
    if op == "$all":
        return all(_eq(values, a) for a in arg)
    if op == "$type":
        names = {"string": 15, "double": 10, "int": 10, "long": 10, "number": 10, "object": 20, "array": 25,
                 "bool": 40, "date": 45, "null": 2, "objectId": 35}
        wanted = arg if isinstance(arg, list) else [arg]
        return any(type_rank(v) == names.get(w, -1) for w in wanted for v in values)
    raise WriteError("BadValue", f"unknown operator: {op}")


def matches(doc: dict, flt: dict | None) -> bool:
    """True when ``doc`` satisfies the query filter ``flt``."""
    if not flt:
        return True
    for key, cond in flt.items():
        if key == "$and":
            if not all(matches(doc, c) for c in cond):
                return False
        elif key == "$or":
            if not any(matches(doc, c) for c in cond):
                return False
        elif key == "$nor":
            if any(matches(doc, c) for c in cond):
                return False
        elif key in ("$comment", "$isolated"):
            continue
        elif key == "$expr":
            raise WriteError("BadValue", "$expr is not supported by the simulator")
        else:
            values = get_path(doc, key)
            if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
                if not all(_op(values, op, arg, cond) for op, arg in cond.items()):
                    return False
            elif isinstance(cond, (Regex, re.Pattern)):
                if not any(_regex_match(v, cond) for v in _candidates(values)):
                    return False
            elif not _eq(values, cond):
                return False
    return True


# ---- updates -------------------------------------------------------------------------------------

def _walk(doc: dict, path: str, create: bool) -> tuple[Any, str]:
    parts = path.split(".")
    cur: Any = doc
    for part in parts[:-1]:
        if isinstance(cur, list) and part.isdigit():
            idx = int(part)
            while create and len(cur) <= idx:
                cur.append(None)
            if idx >= len(cur):
                return None, parts[-1]
            if cur[idx] is None and create:
                cur[idx] = {}
            cur = cur[idx]
        elif isinstance(cur, dict):
            if part not in cur:
                if not create:
                    return None, parts[-1]
                cur[part] = {}
            cur = cur[part]
        else:
            if create:
                raise WriteError("BadValue", f"Cannot create field '{part}' in element {{{part}: {cur!r}}}")
            return None, parts[-1]
    return cur, parts[-1]


def _set(doc: dict, path: str, value: Any) -> None:
    parent, last = _walk(doc, path, True)
    if isinstance(parent, list) and last.isdigit():
        idx = int(last)
        while len(parent) <= idx:
            parent.append(None)
        parent[idx] = value
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise WriteError("BadValue", f"Cannot set field '{path}'")


def _get(doc: dict, path: str) -> Any:
    parent, last = _walk(doc, path, False)
    if isinstance(parent, dict):
        return parent.get(last, _MISSING)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    return _MISSING


def _unset(doc: dict, path: str) -> None:
    parent, last = _walk(doc, path, False)
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        parent[int(last)] = None


def is_operator_update(update: Any) -> bool:
    return isinstance(update, dict) and bool(update) and all(k.startswith("$") for k in update)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=(
        datetime.datetime.now().microsecond // 1000) * 1000)


def apply_update(doc: dict, update: dict, *, inserting: bool = False) -> dict:
    """Return a new document with the update (operators or replacement) applied."""
    if isinstance(update, list):
        raise WriteError("BadValue", "pipeline updates are not supported by the simulator")
    if not is_operator_update(update):
        if any(k.startswith("$") for k in update):
            raise WriteError("BadValue", "replacement document must not contain update operators")
        new = {"_id": doc["_id"]} if "_id" in doc else {}
        for k, v in update.items():
            if k == "_id" and "_id" in doc and compare(v, doc["_id"]) != 0:
                raise WriteError("ImmutableField", "After applying the update, the (immutable) field '_id' "
                                 "was found to have been altered")
            new[k] = copy.deepcopy(v)
        return new
    new = copy.deepcopy(doc)
    for op, fields in update.items():
        if not isinstance(fields, dict):
            raise WriteError("FailedToParse", f"Modifiers operate on fields but we found type {type(fields).__name__}")
        for path, arg in fields.items():
            if path == "_id" and op != "$setOnInsert" and not inserting and op in ("$set", "$unset", "$inc"):
                cur = _get(new, "_id")
                if op != "$set" or compare(cur, arg) != 0:
                    raise WriteError("ImmutableField", "Performing an update on the path '_id' would modify the "
                                     "immutable field '_id'")
            if op == "$set":
                _set(new, path, copy.deepcopy(arg))
            elif op == "$setOnInsert":
                if inserting:
                    _set(new, path, copy.deepcopy(arg))
            elif op == "$unset":
                _unset(new, path)
            elif op in ("$inc", "$mul"):
                cur = _get(new, path)
                if cur is _MISSING:
                    cur = 0
                if not isinstance(cur, (int, float)) or isinstance(cur, bool):
                    raise WriteError("TypeMismatch", f"Cannot apply {op} to a value of non-numeric type")
                _set(new, path, cur + arg if op == "$inc" else cur * arg)
            elif op in ("$min", "$max"):
                cur = _get(new, path)
                if cur is _MISSING or (compare(arg, cur) < 0 if op == "$min" else compare(arg, cur) > 0):
                    _set(new, path, copy.deepcopy(arg))
            elif op in ("$push", "$addToSet"):
                cur = _get(new, path)
                if cur is _MISSING:
                    cur = []
                if not isinstance(cur, list):
                    raise WriteError("BadValue", f"The field '{path}' must be an array")
                items = arg["$each"] if isinstance(arg, dict) and "$each" in arg else [arg]
                cur = list(cur)
                for it in items:
                    if op == "$push" or not any(compare(x, it) == 0 for x in cur):
                        cur.append(copy.deepcopy(it))
                if op == "$push" and isinstance(arg, dict) and "$slice" in arg:
                    n = arg["$slice"]
                    cur = cur[:n] if n >= 0 else cur[n:]
                _set(new, path, cur)
            elif op == "$pull":
                cur = _get(new, path)
                if isinstance(cur, list):
                    if isinstance(arg, dict) and any(k.startswith("$") for k in arg):
                        keep = [x for x in cur if not all(_op([x], k, a, arg) for k, a in arg.items())]
                    elif isinstance(arg, dict):
                        keep = [x for x in cur if not (isinstance(x, dict) and matches(x, arg))]
                    else:
                        keep = [x for x in cur if compare(x, arg) != 0]
                    _set(new, path, keep)
            elif op == "$pop":
                cur = _get(new, path)
                if isinstance(cur, list) and cur:
                    _set(new, path, cur[1:] if arg == -1 else cur[:-1])
            elif op == "$rename":
                cur = _get(new, path)
                if cur is not _MISSING:
                    _unset(new, path)
                    _set(new, arg, cur)
            elif op == "$currentDate":
                _set(new, path, _now())
            else:
                raise WriteError("FailedToParse", f"Unknown modifier: {op}. Expected a valid update modifier or "
                                 "pipeline-style update specified as an array")
    return new


def upsert_seed(flt: dict) -> dict:
    """The equality fields of a filter, used as the base document for an upsert."""
    seed: dict = {}
    for k, v in (flt or {}).items():
        if k.startswith("$"):
            if k == "$and":
                for sub in v:
                    for sk, sv in upsert_seed(sub).items():
                        _set(seed, sk, sv)
            continue
        if isinstance(v, dict) and v and all(x.startswith("$") for x in v):
            if "$eq" in v:
                _set(seed, k, copy.deepcopy(v["$eq"]))
            continue
        _set(seed, k, copy.deepcopy(v))
    return seed


def sort_docs(docs: list[dict], spec: dict | None) -> list[dict]:
    if not spec:
        return docs
    out = list(docs)
    for field, direction in reversed(list(spec.items())):
        def key(d: dict, field: str = field, direction: Any = direction) -> Key:
            vals = get_path(d, field)
            if not vals:
                return Key(None)
            flat = _candidates(vals)
            flat = [v for v in flat if not isinstance(v, list)] or [None]
            pick = min(flat, key=Key) if direction == 1 or direction == 1.0 else max(flat, key=Key)
            return Key(pick)
        out.sort(key=key, reverse=(direction == -1))
    return out


def project(doc: dict, proj: dict | None) -> dict:
    if not proj:
        return doc
    include = [k for k, v in proj.items() if k != "_id" and (v is True or (not isinstance(v, bool) and v == 1))]
    exclude = [k for k, v in proj.items() if v is False or (not isinstance(v, bool) and v == 0)]
    if include:
        out: dict = {}
        if proj.get("_id", 1) not in (0, False) and "_id" in doc:
            out["_id"] = doc["_id"]
        for path in include:
            v = _get(doc, path)
            if v is not _MISSING:
                _set(out, path, v)
        return out
    out = copy.deepcopy(doc)
    for path in exclude:
        _unset(out, path)
    return out


def index_key(doc: dict, key_spec: dict) -> tuple:
    """Key tuple a document has in an index (missing fields index as null)."""
    parts = []
    for field in key_spec:
        vals = get_path(doc, field)
        v = vals[0] if vals else None
        parts.append(hashable(v))
    return tuple(parts)


def hashable(v: Any) -> Any:
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, (int, float)):
        return ("n", float(v))
    if isinstance(v, dict):
        return ("d", tuple((k, hashable(x)) for k, x in v.items()))
    if isinstance(v, list):
        return ("a", tuple(hashable(x) for x in v))
    if isinstance(v, datetime.datetime):
        return ("t", v.replace(tzinfo=None))
    try:
        hash(v)
    except TypeError:
        return ("r", repr(v))
    return (type(v).__name__, v)

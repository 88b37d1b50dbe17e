# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The one validation layer for machine records, pool entries and addresses. Pure functions, no I/O.

Records are the durable truth the planners act on, and the pool comes from an inventory anyone can edit: neither
is trusted. Every check returns problems phrased for an operator (which entry, what is wrong, what to do) instead
of guessing: `"no"` is not true, `42` is not a name, `h:99999` is not an address.
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.stateserver.ha.plugins.module_utils._model import (
    MACHINE_TAG,
    MachineRecord,
    PoolHost,
    members_of,
)

RECORDS_DATABASE = "stateserver"
RECORDS_COLLECTION = "machines"
API_PORT = 17070

# ASCII only: str.isdigit() accepts "٥" and "５", which no resolver or socket does.
_PORT = re.compile(r"[0-9]{1,5}")
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_DOTTED_NUMBERS = re.compile(r"[0-9.]+")
_WHERE = f"{RECORDS_DATABASE}.{RECORDS_COLLECTION}"


class AddressError(ValueError):
    """An address that no mongod could listen on (the message says why)."""


def _host_problem(host: str) -> str | None:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host[1:-1]!r} is not an IPv6 address"
        return None
    if ":" in host:
        return "an IPv6 address must be written in brackets, e.g. [2001:db8::1]:37017"
    if _DOTTED_NUMBERS.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address"
        return None
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return (f"{host!r} is not a host name (letters, digits, '-' and '_' in dot-separated labels of at most 63 "
                "characters) nor an IP address")
    return None


def _bracket_hint(text: str) -> str:
    """' (for v6 port N, write [v6]:N)' when `text` is an IPv6 address with a port glued on, else ''."""
    left, port = text.rpartition(":")[::2]
    try:
        ipaddress.IPv6Address(left)
    except ValueError:
        return ""
    return f" (for {left} port {port}, write [{left}]:{port})" if _PORT.fullmatch(port) else ""


def parse_address(text, default_port: int | None = None) -> tuple[str, int]:
    """(host, port) of `host:port`, `[v6]:port`, or (with a default port) `host`, `[v6]` or a bare IPv6 address.

    Raises AddressError saying what is wrong. The host keeps its spelling; IPv6 hosts keep their brackets.
    """
    if not isinstance(text, str):
        raise AddressError(f"an address must be a 'host:port' string, got {text!r}")
    if not text or text != text.strip():
        raise AddressError(f"{text!r} is not an address: it is empty or has spaces around it")
    host, port = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or (close + 1 < len(text) and text[close + 1] != ":"):
            raise AddressError(f"{text!r} is not an address: write an IPv6 address as [address]:port")
        host = text[:close + 1]
        port = text[close + 2:] if close + 1 < len(text) else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise AddressError(f"{text!r} is not an address: more than one ':' outside brackets"
                               + _bracket_hint(text)) from None
        host = f"[{text}]"
        if default_port is None:
            # "::1:3701" is itself an IPv6 address: the port the writer meant (if any) cannot be told apart.
            raise AddressError(f"{text!r} has no port: it reads as the IPv6 address {text}; write an IPv6 address "
                               f"in brackets with the port after them, e.g. [{text}]:37017" + _bracket_hint(text))
    problem = _host_problem(host)
    if problem:
        raise AddressError(f"{text!r} is not an address: {problem}")
    if port is None:
        if default_port is None:
            raise AddressError(f"{text!r} has no port; write it as host:port")
        return host, default_port
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise AddressError(f"{text!r} is not an address: the port must be a number from 1 to 65535, got {port!r}")
    return host, int(port)


def normalise_address(text, default_port: int | None = None) -> str:
    """`host:port` for an address (see parse_address); raises AddressError."""
    host, port = parse_address(text, default_port)
    return f"{host}:{port}"


def address_key(address: str) -> str:
    """How two addresses are compared: host names are case-insensitive."""
    return address.lower()


# -- records <-> documents ---------------------------------------------------------------------------------------

def record_to_doc(record: MachineRecord) -> dict:
    return {
        "_id": record.name,
        "mongo_address": record.mongo_address,
        "api_address": record.api_address,
        "wants_vote": record.wants_vote,
    }


def _name_problem(name) -> str | None:
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__} {name!r}"
    if not name.strip():
        return "is empty"
    if name != name.strip() or any(ord(c) < 32 or c == "\x7f" for c in name):
        return f"{name!r} has spaces around it or control characters"
    return None


def record_problems(doc) -> list[str]:
    """What is wrong with one document of stateserver.machines ([] when it is a valid record)."""
    if not isinstance(doc, dict):
        return [f"a document of {_WHERE} is not a document: {doc!r}"]
    name = doc.get("_id")
    problem = _name_problem(name)
    if problem:
        return [(f"a record of {_WHERE} has an _id that is not a machine name ({problem}); delete it "
                 "(ensure_availability writes the records again from the pool)")]
    where = f"record {name!r} in {_WHERE}"
    problems = []
    for key in ("mongo_address", "api_address"):
        try:
            normalise_address(doc.get(key))
        except AddressError as exc:
            problems.append(f"{where}: {key} {exc}; set it to the machine's host:port or delete the record and run "
                            "ensure_availability again")
    wants = doc.get("wants_vote", "missing")
    if not isinstance(wants, bool):
        problems.append(f"{where}: wants_vote must be true or false, got {wants!r}; set it to true or false "
                        "(ensure_availability decides it when the record is deleted and written again)")
    return problems


def record_from_doc(doc: dict) -> MachineRecord:
    """The record a valid document holds; raises ValueError (the problems, joined) for an invalid one."""
    problems = record_problems(doc)
    if problems:
        raise ValueError("; ".join(problems))
    return MachineRecord(name=doc["_id"], mongo_address=doc["mongo_address"], api_address=doc["api_address"],
                         wants_vote=doc["wants_vote"])


def parse_record_docs(docs) -> tuple[list[MachineRecord], list[str]]:
    """(valid records sorted by name, problems). Act on the records only when problems is empty.

    Beyond each document on its own: two records may not share a mongo address (two machines cannot be one member).
    """
    records, problems = [], []
    for doc in docs:
        found = record_problems(doc)
        if found:
            problems.extend(found)
        else:
            records.append(record_from_doc(doc))
    problems.extend(shared_addresses(records, "records"))
    return sorted(records, key=lambda r: r.name), problems


def shared_addresses(items, what: str) -> list[str]:
    """Problems for items (records or pool hosts) that share a mongo address: one address is one member."""
    owners: dict[str, list] = {}
    for item in items:
        owners.setdefault(address_key(item.mongo_address), []).append(item)
    return [f"{what} {' and '.join(repr(i.name) for i in same)} share the mongo address {same[0].mongo_address}; "
            "one address is one member: give each machine its own address" for same in owners.values() if len(same) > 1]


# -- pool entries ------------------------------------------------------------------------------------------------

def parse_pool(entries: list, port: int) -> tuple[list[PoolHost], list[str]]:
    """(pool hosts, problems) for the module's `pool` option. Each entry: name, address or mongo_address,
    optional api_address (defaults to the mongo host with port 17070) and reachable."""
    hosts, problems = [], []
    for i, entry in enumerate(entries or []):
        name = entry.get("name") if isinstance(entry, dict) else None
        problem = _name_problem(name)
        if problem:
            problems.append(f"pool entry {i + 1} ({entry!r}): name {problem}; give every host of state_machines a "
                            "name (its inventory_hostname)")
            continue
        where = f"pool entry {name!r}"
        raw = entry.get("mongo_address") or entry.get("address")
        if raw is None:
            problems.append(f"{where} has neither address nor mongo_address; set one (host or host:port)")
            continue
        try:
            # mongo_address is the member host string itself, so it must carry its port.
            mongo = normalise_address(raw, None if entry.get("mongo_address") else port)
        except AddressError as exc:
            key = "mongo_address" if entry.get("mongo_address") else "address"
            problems.append(f"{where}: {key} {exc}")
            continue
        api = entry.get("api_address")
        try:
            api = normalise_address(api) if api is not None else f"{parse_address(mongo)[0]}:{API_PORT}"
        except AddressError as exc:
            problems.append(f"{where}: api_address {exc}")
            continue
        reachable = entry.get("reachable", True)
        hosts.append(PoolHost(name=name, mongo_address=mongo, api_address=api,
                              reachable=True if reachable is None else bool(reachable)))
    seen: dict[str, int] = {}
    for host in hosts:
        seen[host.name] = seen.get(host.name, 0) + 1
    problems += [f"pool entry name {name!r} appears {count} times; each machine must appear once in state_machines"
                 for name, count in seen.items() if count > 1]
    problems += shared_addresses(hosts, "pool entries")
    return hosts, problems


# -- set identity of the hosts that answer -----------------------------------------------------------------------

def hello_members(hello: dict) -> set[str]:
    return {address_key(h) for key in ("hosts", "passives", "arbiters") for h in hello.get(key) or []}


def answers_as_member(hello, member_host: str, set_name: str | None = None) -> bool:
    """Whether a hello answer comes from the member configured at member_host: mongod reports its configured host
    as `me`, so a process reached at a new address that names the old one is the same member."""
    return (isinstance(hello, dict) and hello.get("setName") is not None
            and (set_name is None or hello.get("setName") == set_name)
            and address_key(str(hello.get("me") or "")) == address_key(member_host))


def foreign_hosts(set_name: str, config: dict | None, hellos: dict) -> list[str]:
    """Problems for answering pool hosts that belong to another replica set ([] when none does).

    hellos: {address probed: hello document}. A host is foreign when it is an initiated member (it reports a
    setName) of a set with another name, or of a set with our name of which it is not a member in our config (a
    second set that happens to share the name). Uninitiated mongods are spares, not foreign.
    """
    ours = {address_key(m.host) for m in members_of(config)}
    problems = []
    for address, hello in sorted(hellos.items()):
        if not isinstance(hello, dict) or not hello.get("setName"):
            continue
        me = address_key(str(hello.get("me") or address))
        if hello["setName"] != set_name:
            problems.append(f"pool host {address} is a member of replica set {hello['setName']!r}, not "
                            f"{set_name!r}; remove it from state_machines or wipe its data directory before it can "
                            "join this set; nothing was changed")
        elif config is None:
            problems.append(f"pool host {address} is already a member of an initiated replica set named {set_name!r} "
                            "although the seeds found none; add it to the seeds if it is this set, or wipe its data "
                            "directory; nothing was changed")
        elif me not in ours and address_key(address) not in ours and not (hello_members(hello) & ours):
            problems.append(f"pool host {address} is a member of another replica set also named {set_name!r} "
                            f"(members {', '.join(sorted(hello_members(hello))) or 'unknown'}); remove it from "
                            "state_machines or wipe its data directory; nothing was changed")
    return problems


__all__ = ["API_PORT", "MACHINE_TAG", "RECORDS_COLLECTION", "RECORDS_DATABASE", "AddressError", "address_key",
           "answers_as_member",
           "foreign_hosts", "normalise_address", "parse_address", "parse_pool", "parse_record_docs", "record_from_doc",
           "record_problems", "record_to_doc", "shared_addresses"]

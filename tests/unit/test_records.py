"""The validation layer for records, pool entries and addresses (_records.py): each bad input seen in issue 12."""

from __future__ import annotations

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._model import MachineRecord, PoolHost
from ansible_collections.stateserver.ha.plugins.module_utils._records import (
    AddressError,
    foreign_hosts,
    normalise_address,
    parse_pool,
    parse_record_docs,
    record_from_doc,
    record_to_doc,
)
from fixtures import config, member


def doc(name="sm1", mongo="10.0.0.1:37017", api="10.0.0.1:17070", wants=True, **extra) -> dict:
    return {"_id": name, "mongo_address": mongo, "api_address": api, "wants_vote": wants, **extra}


@pytest.mark.parametrize(("text", "expected"), [
    ("h", "h:37017"), ("h:1", "h:1"), ("h:65535", "h:65535"), ("Host-1.example.com", "Host-1.example.com:37017"),
    ("10.0.0.1", "10.0.0.1:37017"), ("::1", "[::1]:37017"), ("[::1]", "[::1]:37017"), ("[2001:db8::1]:5", "[2001:db8::1]:5"),
    ("lab_host.", "lab_host.:37017"),
])
def test_good_addresses(text, expected):
    assert normalise_address(text, 37017) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("not a host!!", "not a host name"), ("h:99999", "1 to 65535"), ("h:0", "1 to 65535"), ("a:b:c", "more than one ':'"),
    ("", "empty"), (" ", "empty"), (" h", "spaces"), ("h:+5", "1 to 65535"), ("h:٥", "1 to 65535"), ("h:", "1 to 65535"),
    ("999.1.1.1", "not an IPv4"), ("[zz]:1", "not an IPv6"), ("[::1]x", "IPv6 address as"), ("-h", "not a host name"),
    ("ｈ", "not a host name"), (42, "string"), (None, "string"),
])
def test_bad_addresses_say_why(text, why):
    with pytest.raises(AddressError, match="not an address|string|port") as info:
        normalise_address(text, 37017)
    assert why in str(info.value)


def test_address_without_port_needs_a_default():
    with pytest.raises(AddressError, match="no port"):
        normalise_address("h")


def test_records_round_trip():
    record = MachineRecord("sm1", "10.0.0.1:37017", "10.0.0.1:17070", False)
    assert record_from_doc({**record_to_doc(record), "created": "then"}) == record
    records, problems = parse_record_docs([doc("b", "10.0.0.2:37017"), doc("a")])
    assert problems == [] and [r.name for r in records] == ["a", "b"]


@pytest.mark.parametrize(("bad", "words"), [
    (doc(wants=None), ["'sm1'", "wants_vote", "None", "true or false"]),
    (doc(wants=0), ["'sm1'", "wants_vote", "0"]),
    (doc(wants="no"), ["'sm1'", "wants_vote", "'no'"]),
    (doc(wants="yes"), ["'sm1'", "wants_vote"]),
    ({k: v for k, v in doc().items() if k != "wants_vote"}, ["'sm1'", "wants_vote"]),
    (doc(name=42), ["_id", "42", "delete it"]),
    (doc(name=""), ["_id", "empty"]),
    (doc(name=" sm1"), ["_id", "spaces"]),
    (doc(mongo="not a host!!"), ["'sm1'", "mongo_address", "not a host name"]),
    (doc(mongo="h:99999"), ["'sm1'", "mongo_address", "65535"]),
    (doc(mongo="h"), ["'sm1'", "mongo_address", "no port"]),
    (doc(mongo=None), ["'sm1'", "mongo_address"]),
    (doc(api=""), ["'sm1'", "api_address"]),
    ("a string", ["not a document"]),
])
def test_bad_records_are_refused_and_named(bad, words):
    records, problems = parse_record_docs([bad, doc("ok", "10.0.0.9:37017")])
    assert [r.name for r in records] == ["ok"]
    assert len(problems) >= 1
    for word in words:
        assert word in problems[0], problems
    with pytest.raises(ValueError):
        record_from_doc(bad)


def test_two_records_sharing_an_address_are_refused():
    _records, problems = parse_record_docs([doc("a", "H:1"), doc("b", "h:1")])
    assert len(problems) == 1 and "'a' and 'b'" in problems[0] and "own address" in problems[0]


def test_good_pool_gets_ports_and_api_addresses():
    hosts, problems = parse_pool([
        {"name": "sm1", "address": "10.0.0.1"},
        {"name": "sm2", "address": "10.0.0.2:4000", "api_address": "10.0.0.2:9"},
        {"name": "sm3", "mongo_address": "[::1]:37017", "reachable": False},
    ], 37017)
    assert problems == []
    assert hosts == [PoolHost("sm1", "10.0.0.1:37017", "10.0.0.1:17070"), PoolHost("sm2", "10.0.0.2:4000", "10.0.0.2:9"),
                     PoolHost("sm3", "[::1]:37017", "[::1]:17070", reachable=False)]


@pytest.mark.parametrize(("pool", "words"), [
    ([{"name": "sm4", "address": "h4"}, {"name": "sm4", "address": "h5"}], ["'sm4'", "2 times"]),
    ([{"name": "sm4", "address": "h4"}, {"name": "sm5", "address": "H4:37017"}], ["'sm4' and 'sm5'", "h4:37017"]),
    ([{"name": "sm4", "address": "not a host!!"}], ["'sm4'", "not a host name"]),
    ([{"name": "sm4", "address": "h:99999"}], ["'sm4'", "65535"]),
    ([{"name": "sm4", "address": "a:b:c"}], ["'sm4'", "':'"]),
    ([{"name": "sm4", "address": " "}], ["'sm4'", "empty"]),
    ([{"name": "", "address": "h"}], ["pool entry 1", "name is empty"]),
    ([{"name": "sm4"}], ["'sm4'", "neither address nor mongo_address"]),
    ([{"name": "sm4", "mongo_address": "h"}], ["'sm4'", "no port"]),
    ([{"name": "sm4", "address": "h", "api_address": "h:70000"}], ["'sm4'", "api_address", "65535"]),
])
def test_bad_pool_entries_are_named_with_the_fix(pool, words):
    _hosts, problems = parse_pool(pool, 37017)
    assert problems
    for word in words:
        assert word in " ".join(problems), problems


def hello(set_name=None, me=None, hosts=()):
    found = {"isWritablePrimary": False, "secondary": bool(set_name)}
    if set_name:
        found.update(setName=set_name, me=me, hosts=list(hosts))
    return found


OURS = config([member(0, "a"), member(1, "b")])


def test_hosts_of_another_set_are_foreign():
    problems = foreign_hosts("stateserver", OURS, {
        "10.0.0.5:37017": hello("other", "10.0.0.5:37017", ["10.0.0.5:37017"]),
        "10.0.0.6:37017": hello("stateserver", "10.0.0.6:37017", ["10.0.0.6:37017", "10.0.0.7:37017"]),
        "10.0.0.1:37017": hello("stateserver", "10.0.0.1:37017", ["10.0.0.0:37017", "10.0.0.1:37017"]),
        "10.0.0.8:37017": hello(),
        "10.0.0.9:37017": "connection refused",
    })
    assert len(problems) == 2
    assert "10.0.0.5:37017" in problems[0] and "'other'" in problems[0] and "remove it from state_machines" in problems[0]
    assert "10.0.0.6:37017" in problems[1] and "another replica set also named" in problems[1]


def test_an_initiated_pool_host_before_our_set_exists_is_refused():
    problems = foreign_hosts("stateserver", None, {"h:1": hello("stateserver", "h:1", ["h:1"]), "h:2": hello()})
    assert len(problems) == 1 and "h:1" in problems[0] and "seeds" in problems[0]


# -- IPv6 (issue 12): the bracketed form is the only one with a port ----------------------------------------------

def test_a_record_with_a_bracketed_ipv6_address_is_valid():
    records, problems = parse_record_docs([doc(mongo="[::1]:37017", api="[::1]:17070"),
                                           doc("sm2", "[2001:db8::2]:37017", "[2001:db8::2]:17070")])
    assert problems == [] and [r.mongo_address for r in records] == ["[::1]:37017", "[2001:db8::2]:37017"]


@pytest.mark.parametrize(("text", "words"), [
    ("::1:37017", ["'::1:37017'", "[::1]:37017"]),
    # A valid IPv6 address itself: which part was meant as the port cannot be told, so it is never guessed.
    ("::1:3701", ["no port", "[::1]:3701"]),
    ("2001:db8::1:80", ["no port", "[2001:db8::1]:80"]),
])
def test_an_unbracketed_ipv6_address_with_a_port_is_refused_with_the_bracketed_form(text, words):
    _records, problems = parse_record_docs([doc(mongo=text)])
    assert len(problems) == 1 and "'sm1'" in problems[0] and "mongo_address" in problems[0]
    for word in words:
        assert word in problems[0]
    _hosts, problems = parse_pool([{"name": "sm1", "mongo_address": text}], 37017)
    assert len(problems) == 1 and all(word in problems[0] for word in words)


def test_pool_entries_with_ipv6_hosts_are_bracketed():
    hosts, problems = parse_pool([{"name": "sm1", "address": "::1"}, {"name": "sm2", "address": "[::1]:37018"},
                                  {"name": "sm3", "mongo_address": "[::1]:37019", "api_address": "[::1]:17071"}], 37017)
    assert problems == []
    assert [(h.mongo_address, h.api_address) for h in hosts] == [
        ("[::1]:37017", "[::1]:17070"), ("[::1]:37018", "[::1]:17070"), ("[::1]:37019", "[::1]:17071")]

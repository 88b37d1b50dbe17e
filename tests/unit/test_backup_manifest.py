"""Backups of the state database (issue 16): the manifest, its verification refusals, retention, the source."""

from __future__ import annotations

import datetime

import bson
import bson.errors
import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._backup import (
    FORMAT,
    SourceError,
    backup_name,
    build_manifest,
    choose_source,
    file_problems,
    is_backup_name,
    manifest_problems,
    occupied,
    restore_collections,
    retention,
)
from bson import Timestamp
from hypothesis import given
from hypothesis import strategies as st

NOW = datetime.datetime(2026, 11, 30, 5, 40, 0, 123456, tzinfo=datetime.UTC)
UNITS = b"".join(bson.encode({"_id": f"unit/{i}", "n": i}) for i in range(3))
KV = bson.encode({"_id": "config", "value": {"a": [1, 2]}})


def manifest() -> dict:
    return build_manifest(set_name="stateserver", set_id="6566a1b2c3d4e5f601234567", config_version=7,
                          source="127.0.0.2:37017", optime={"ts": [1796017200, 3], "t": 4}, created=NOW,
                          files={"units": UNITS, "kv": KV, "machines": b""},
                          counts={"units": 3, "kv": 1, "machines": 0},
                          indexes={"kv": [{"key": {"version": 1}, "name": "by_version"}]})


def files() -> dict:
    return {"stateserver.units.bson": UNITS, "stateserver.kv.bson": KV, "stateserver.machines.bson": b""}


def problems(m: dict, f: dict) -> list[str]:
    return file_problems(m, f, bson.decode_all, bson.errors.BSONError)


def test_manifest_names_the_set_the_point_in_time_and_each_file():
    m = manifest()
    assert m["format"] == FORMAT and m["replica_set"] == "stateserver" and m["config_version"] == 7
    assert m["optime"] == {"ts": [1796017200, 3], "t": 4} and m["created"] == "2026-11-30T05:40:00.123456Z"
    assert m["collections"]["units"]["file"] == "stateserver.units.bson"
    assert m["collections"]["units"]["count"] == 3 and len(m["collections"]["units"]["sha256"]) == 64
    assert m["collections"]["kv"]["indexes"] == [{"key": {"version": 1}, "name": "by_version"}]
    assert manifest_problems(m) == [] and problems(m, files()) == []


@pytest.mark.parametrize("position", [0, 4, len(UNITS) // 2, len(UNITS) - 1])
def test_a_changed_byte_is_refused(position):
    f = files()
    data = bytearray(UNITS)
    data[position] ^= 0x40
    f["stateserver.units.bson"] = bytes(data)
    assert problems(manifest(), f) == [
        "stateserver.units.bson does not match its sha256 in manifest.json (changed or truncated)"]


def test_a_missing_file_is_refused():
    f = files()
    f["stateserver.kv.bson"] = None
    assert problems(manifest(), f) == ["stateserver.kv.bson is missing"]


def test_a_count_that_does_not_match_the_documents_is_refused():
    m = manifest()
    m["collections"]["units"]["count"] = 4
    assert problems(m, files()) == ["stateserver.units.bson holds 3 documents, manifest.json says 4"]


def test_bytes_that_are_not_bson_but_match_the_checksum_are_refused():
    m = build_manifest(set_name="s", set_id="", config_version=1, source="h:1", optime={"ts": [1, 1], "t": 1},
                       created=NOW, files={"kv": b"\x05\x00\x00"}, counts={"kv": 1}, indexes={})
    (problem,) = problems(m, {"stateserver.kv.bson": b"\x05\x00\x00"})
    assert problem.startswith("stateserver.kv.bson is not valid BSON")


@pytest.mark.parametrize("change, expected", [
    (lambda m: m.update(format="stateserver.ha/state-backup/2"), "has format 'stateserver.ha/state-backup/2'"),
    (lambda m: m.pop("format"), "has format None"),
    (lambda m: m.update(database="admin"), "is of database 'admin'"),
    (lambda m: m.pop("collections"), "has no collections object"),
    (lambda m: m["collections"]["kv"].pop("sha256"), "collection 'kv': the entry needs"),
    (lambda m: m["collections"]["kv"].update(file="../etc/passwd"), "collection 'kv': the entry needs"),
    (lambda m: m["collections"]["kv"].update(count=-1), "collection 'kv': the entry needs"),
    (lambda m: m["collections"].update({"../x": m["collections"]["kv"]}), "collection name '../x'"),
    (lambda m: m["collections"].update({"system.users": m["collections"]["kv"]}), "collection name 'system.users'"),
])
def test_a_manifest_of_another_format_or_shape_is_refused(change, expected):
    m = manifest()
    change(m)
    found = manifest_problems(m)
    assert found and expected in found[0], found


def test_a_manifest_that_is_not_an_object_is_refused():
    assert manifest_problems([1, 2]) == ["manifest.json is not a JSON object"]


def test_the_records_are_restored_only_when_asked_for():
    assert restore_collections(manifest(), include_records=False) == ["kv", "units"]
    assert restore_collections(manifest(), include_records=True) == ["kv", "machines", "units"]


def test_occupied_names_only_restored_collections_with_documents():
    assert occupied({"units": 2, "kv": 0, "machines": 3}, ["kv", "units"]) == ["units (2 documents)"]
    assert occupied({}, ["kv", "units"]) == []


def test_backup_names_sort_in_time_order():
    earlier = backup_name(NOW)
    later = backup_name(NOW + datetime.timedelta(microseconds=1))
    assert earlier == "stateserver-20261130T054000123456Z" and is_backup_name(earlier)
    assert earlier < later
    assert not is_backup_name("stateserver-latest") and not is_backup_name(".stateserver-20261130T054000123456Z.x")


def test_retention_keeps_the_newest_and_never_touches_other_names():
    old = [backup_name(NOW - datetime.timedelta(days=d)) for d in range(1, 5)]
    new = backup_name(NOW)
    kept, removed = retention([*old, "notes.txt", "stateserver-latest"], 3, new=new)
    assert kept == [new, old[0], old[1]]
    assert removed == sorted(old[2:])
    assert retention([], 1, new=new) == ([new], [])


def test_retain_below_one_is_refused():
    with pytest.raises(ValueError, match="retain must be at least 1"):
        retention([], 0)


@given(st.lists(st.integers(0, 10**6), unique=True, max_size=20), st.integers(1, 10))
def test_retention_keeps_min_retain_backups_all_newer_than_any_removed(ages, retain):
    names = [backup_name(NOW - datetime.timedelta(seconds=a)) for a in ages]
    kept, removed = retention(names, retain)
    assert len(kept) == min(retain, len(names))
    assert set(kept) | set(removed) == set(names) and not set(kept) & set(removed)
    assert all(k > r for k in kept for r in removed)


def status(*members) -> dict:
    return {"members": [{"name": name, "health": health, "state": state, "stateStr": text,
                         "optime": {"ts": Timestamp(secs, 1), "t": 1}}
                        for name, health, state, text, secs in members]}


def test_the_most_advanced_healthy_secondary_is_the_source():
    s = status(("a:1", 1, 1, "PRIMARY", 10), ("b:1", 1, 2, "SECONDARY", 8), ("c:1", 1, 2, "SECONDARY", 9),
               ("d:1", 0, 2, "SECONDARY", 11), ("e:1", 1, 3, "RECOVERING", 12))
    assert choose_source(s, allow_primary=False) == "c:1"


def test_without_a_healthy_secondary_the_primary_only_when_allowed():
    s = status(("a:1", 1, 1, "PRIMARY", 10), ("b:1", 0, 8, "(not reachable/healthy)", 8))
    with pytest.raises(SourceError, match="no healthy SECONDARY.*allow_primary.*a:1 PRIMARY, b:1 "):
        choose_source(s, allow_primary=False)
    assert choose_source(s, allow_primary=True) == "a:1"
    with pytest.raises(SourceError, match="no healthy SECONDARY"):
        choose_source(status(("b:1", 0, 8, "DOWN", 8)), allow_primary=True)

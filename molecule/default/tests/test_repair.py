"""repair, in the default scenario after test_default.py, on its hosts: power off the primary's machine past
down_after; writes go on; ensure-ha replaces it from the spare m5.

test_default.py left m2, m3 and m4 voting and m1 retired (stopped, its data kept). m1 is powered off first, as a retired
machine is decommissioned: left on, with no record, it would be the first spare in the inventory."""

import json
import shlex
import time

import hatest

DOWN_AFTER = 10  # stateserver_ha_down_after in molecule.yml
VOTERS = ["m2", "m3", "m4"]  # as test_default.py left them
SPARE = "m5"
# The role settings test_default.py last applied: a run with them restarts no member that stays.
SAME_SETTINGS = ("-e", "mongod_limit_nofile=8000")
UNIT = "u1"  # the scenario's unit host (group units)


def primary_machine():
    status = hatest.replset_status()
    config = hatest.replset_config()
    host = hatest.primaries(status)[0]
    return next(hatest.machine_of(m) for m in config["members"] if m["host"] == host)


def test_primary_machine_down_is_replaced_by_the_spare():
    hatest.labhosts("stop", "m1")
    hatest.healthy_voters(3)
    assert hatest.voters(hatest.replset_config()) == VOTERS
    victim = primary_machine()

    # The unit (host u1, role stateserver.ha.unit) writes through the API, and its cache is made to hold the
    # victim's API address as the one that worked last: the worst case for the sticky-first rule.
    code, out = hatest.unit_client(UNIT, "put", "repair-unit", '"before"', "--version", "0")
    assert code == 0, out
    assert out["version"] == 1
    cache = hatest.unit_cache(UNIT)
    cache["last_address"] = f"{hatest.address(victim)}:17070"
    hatest.ssh(UNIT, f"echo {shlex.quote(json.dumps(cache))} > {hatest.UNIT_CACHE}")

    hatest.labhosts("stop", victim)

    # The two survivors elect a primary and keep taking majority writes.
    def write():
        with hatest.client(w="majority", wtimeoutMS=5000) as c:
            return c.stateserver.repair_probe.insert_one({"at": time.time()}).acknowledged
    hatest.wait_until(write, 120, "a majority write after the primary's machine went down")

    # The unit's next write succeeds through a surviving API server (one request id, so a retried write that
    # was in fact applied is not applied twice), and the unit now remembers that server, not the dead one.
    def unit_write():
        result = hatest.unit_client(UNIT, "put", "repair-unit", '"during"', "--version", "1",
                                    "--request-id", "repair-unit-2")
        return result if result[0] == 0 else None
    code, out = hatest.wait_until(unit_write, 120, "the unit's write through a surviving API server")
    assert out["version"] == 2
    assert hatest.unit_cache(UNIT)["last_address"] != f"{hatest.address(victim)}:17070"
    with hatest.client() as c:
        stored = c.stateserver.kv.find_one({"_id": "repair-unit"})
    assert (json.loads(stored["value_json"]), stored["version"]) == ("during", 2)
    assert [a["id"] for a in stored["applied"]].count("repair-unit-2") == 1  # applied once, however often retried

    # Wait until the survivors have missed the victim for longer than down_after, then repair.
    hatest.wait_until(lambda: hatest.member_down_for(victim) > DOWN_AFTER + 1, 120,
                      f"the survivors to have missed {victim} for more than down_after")
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=3", *SAME_SETTINGS)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    status = hatest.healthy_voters(3)
    config = hatest.replset_config()
    expected = sorted(set(VOTERS + [SPARE]) - {victim})
    assert hatest.voters(config) == expected
    with hatest.client() as c:
        records = {r["_id"]: r["wants_vote"] for r in c.stateserver.machines.find()}
    assert records[SPARE] is True
    assert records[victim] is False
    assert len(hatest.primaries(status)) == 1


def test_the_unit_learns_the_replacement_api_address():
    # The unit's config lists m1..m5 from install time; what it learns comes from the machine records.
    code, out = hatest.unit_client(UNIT, "addresses")
    assert code == 0, out
    with hatest.client() as c:
        published = sorted(r["api_address"] for r in c.stateserver.machines.find() if r.get("api_address"))
    assert f"{hatest.address(SPARE)}:17070" in published
    assert sorted(hatest.unit_cache(UNIT)["published"]) == published
    code, out = hatest.unit_client(UNIT, "put", "repair-unit", '"after"', "--version", "2")
    assert code == 0, out


def test_writes_still_succeed_after_the_repair():
    with hatest.client(w="majority", wtimeoutMS=10000) as c:
        assert c.stateserver.repair_probe.insert_one({"after": True}).acknowledged

"""repair: power off the primary's machine past down_after; writes go on; ensure-ha replaces it from the spare."""

import time

import hatest

DOWN_AFTER = 10  # stateserver_ha_down_after in molecule.yml


def primary_machine():
    status = hatest.replset_status()
    config = hatest.replset_config()
    host = hatest.primaries(status)[0]
    return next(hatest.machine_of(m) for m in config["members"] if m["host"] == host)


def test_primary_machine_down_is_replaced_by_the_spare():
    hatest.healthy_voters(3)
    assert hatest.voters(hatest.replset_config()) == ["m1", "m2", "m3"]
    victim = primary_machine()
    hatest.labhosts("stop", victim)

    # The two survivors elect a primary and keep taking majority writes, directly and through the API.
    def write():
        with hatest.client(w="majority", wtimeoutMS=5000) as c:
            return c.stateserver.repair_probe.insert_one({"at": time.time()}).acknowledged
    hatest.wait_until(write, 120, "a majority write after the primary's machine went down")
    if hatest.api_role_exists():
        survivor = next(n for n in ("m1", "m2", "m3") if n != victim)
        body = {"value": {"during": "outage"}, "version": 0, "request_id": "repair-probe-1"}
        hatest.wait_until(
            lambda: hatest.api(survivor, "PUT", "/v1/kv/repair-probe", hatest.api_token(), json=body).status_code
            == 200, 120, "an API write through a surviving machine")

    # Wait out down_after as the survivors see it, then repair.
    time.sleep(DOWN_AFTER + 5)
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=3")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    status = hatest.healthy_voters(3)
    config = hatest.replset_config()
    expected = sorted({"m1", "m2", "m3", "m4"} - {victim})
    assert hatest.voters(config) == expected
    with hatest.client() as c:
        records = {r["_id"]: r["wants_vote"] for r in c.stateserver.machines.find()}
    assert records["m4"] is True
    assert records[victim] is False
    assert len(hatest.primaries(status)) == 1


def test_writes_still_succeed_after_the_repair():
    with hatest.client(w="majority", wtimeoutMS=10000) as c:
        assert c.stateserver.repair_probe.insert_one({"after": True}).acknowledged

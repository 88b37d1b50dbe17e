"""The bad-input table (issue 12): inputs x expected refusal x state unchanged, against one real replica set.

One converged 3-voter set (sm1..sm3; sm4's address has no mongod: a dead host) serves every row: each row either
fails before it changes anything, or its change is undone before the next row, and every row asserts on the state
read back with pymongo (config version, voters, machine records), never on log text alone.
"""

from __future__ import annotations

import pytest
from cluster import MACHINE_TAG, Cluster
from playbook import run_tasks

pytestmark = pytest.mark.timeout(900)

EA = "stateserver.ha.ensure_availability"
PG = "stateserver.ha.peergroup"


def pool(cluster: Cluster, count: int = 3) -> list[dict]:
    return [{"name": cluster.names[i], "address": cluster.hosts[i]} for i in range(count)]


def conn(cluster: Cluster) -> dict:
    return {"seeds": cluster.addresses[:3], "server_selection_timeout": 10}


def ea(cluster: Cluster, **extra) -> dict:
    args = {"n": 3, "pool": pool(cluster), "down_after": 60, **conn(cluster)}
    args.update(extra)
    return {EA: args}


def pg(cluster: Cluster) -> dict:
    return {PG: {"timeout": 60, **conn(cluster)}}


def state(cluster: Cluster) -> tuple[int, list[str], list[dict]]:
    """(config version, voting machines, machine records) as the primary has them."""
    config, _status, records = cluster.read()
    voters = sorted(m["tags"][MACHINE_TAG] for m in config["members"] if m.get("votes", 1))
    return config["version"], voters, records


def assert_refused(result: dict, words: list[str]) -> None:
    assert result.get("failed") is True, result
    assert result.get("changed") is False, result
    # No traceback reached the user (ansible-core 2.19 sets exception to "(traceback unavailable)" on every failure).
    assert "Traceback" not in str(result.get("exception", "")) and "module_stderr" not in result, result
    for word in words:
        assert word in result["msg"], (word, result["msg"])


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bad-input")
    cluster = Cluster(workdir / "cluster", 4, start=3)
    try:
        cluster.initiate(0)
        run = run_tasks(workdir / "setup", [ea(cluster), pg(cluster)])
        assert all(r.get("failed") is not True for r in run.results), run.results
        _version, voters, records = state(cluster)
        assert voters == cluster.names[:3] and len(records) == 3
        yield cluster, workdir
    finally:
        cluster.stop()


def _bad_options(cluster: Cluster) -> list[tuple[str, dict, list[str]]]:
    good = pool(cluster)
    return [
        # n: Ansible's int type reads all of these as 5; the playbook refuses them, and so does the module.
        *[(f"n={n!r}", {"n": n}, ["n must be 3, 5 or 7", repr(n)]) for n in (" 5", "+5", "05", "٥", "５", 5.0, "5.0")],
        ("n=4", {"n": 4}, ["n", "3, 5, 7", "4"]),
        ("n=true", {"n": True}, ["n", "3, 5, 7"]),
        ("n=abc", {"n": "abc"}, ["'n'", "abc", "int"]),
        ("down_after=nan", {"down_after": "nan"}, ["down_after", "nan"]),
        ("down_after=inf", {"down_after": "inf"}, ["down_after", "inf"]),
        ("down_after=-1", {"down_after": -1}, ["down_after", "-1"]),
        ("down_after=soon", {"down_after": "soon"}, ["down_after", "float"]),
        ("port=70000", {"port": 70000}, ["port", "65535", "70000"]),
        ("server_selection_timeout=-1", {"server_selection_timeout": -1}, ["server_selection_timeout", "-1"]),
        ("duplicate pool names", {"pool": good + [{"name": "sm3", "address": "127.20.254.1"}]},
         ["pool", "'sm3'", "2 times"]),
        ("two hosts share an address", {"pool": good + [{"name": "sm9", "address": cluster.hosts[2]}]},
         ["'sm3' and 'sm9'", "share"]),
        ("address 'not a host!!'", {"pool": good + [{"name": "sm9", "address": "not a host!!"}]},
         ["'sm9'", "not a host name"]),
        ("address h:99999", {"pool": good + [{"name": "sm9", "address": "h:99999"}]}, ["'sm9'", "65535"]),
        ("address a:b:c", {"pool": good + [{"name": "sm9", "address": "a:b:c"}]}, ["'sm9'", "a:b:c"]),
        ("address ' '", {"pool": good + [{"name": "sm9", "address": " "}]}, ["'sm9'", "empty"]),
        ("empty name", {"pool": good + [{"name": "", "address": "127.20.254.1"}]}, ["pool entry 4", "empty"]),
        ("api port 70000", {"pool": good + [{"name": "sm9", "address": "h9", "api_address": "h9:70000"}]},
         ["'sm9'", "api_address", "65535"]),
    ]


def test_bad_options_and_pool_entries_are_refused_and_change_nothing(converged):
    cluster, workdir = converged
    before = state(cluster)
    rows = _bad_options(cluster)
    run = run_tasks(workdir / "options", [ea(cluster, **args) for _about, args, _words in rows])
    assert len(run.results) == len(rows), run.stdout + run.stderr
    for (about, _args, words), result in zip(rows, run.results):
        try:
            assert_refused(result, words)
        except AssertionError as exc:
            raise AssertionError(f"{about}: {exc}") from exc
    assert state(cluster) == before


def test_the_plain_spellings_of_n_are_accepted(converged):
    cluster, workdir = converged
    before = state(cluster)
    run = run_tasks(workdir / "n-ok", [ea(cluster, n="3"), ea(cluster, n=3)])
    for result in run.results:
        assert result.get("failed") is not True and result["changed"] is False and result["target"] == 3, result
    assert state(cluster) == before


BAD_RECORDS = [
    # about, (filter, update) or a document to insert, words in both modules' messages
    ("wants_vote null", ({"_id": "sm2"}, {"$set": {"wants_vote": None}}), ["'sm2'", "wants_vote", "None"]),
    ("wants_vote 0", ({"_id": "sm2"}, {"$set": {"wants_vote": 0}}), ["'sm2'", "wants_vote", "0"]),
    ("wants_vote 'no'", ({"_id": "sm2"}, {"$set": {"wants_vote": "no"}}), ["'sm2'", "wants_vote", "'no'"]),
    ("_id 42", {"_id": 42, "mongo_address": "127.20.254.2:37017", "api_address": "127.20.254.2:17070",
                "wants_vote": True}, ["_id", "42"]),
    ("mongo_address 'not a host!!'", ({"_id": "sm3"}, {"$set": {"mongo_address": "not a host!!"}}),
     ["'sm3'", "mongo_address", "not a host name"]),
    ("mongo_address h:99999", ({"_id": "sm3"}, {"$set": {"mongo_address": "h:99999"}}), ["'sm3'", "65535"]),
    ("no api_address", ({"_id": "sm3"}, {"$unset": {"api_address": ""}}), ["'sm3'", "api_address"]),
]


@pytest.mark.parametrize("about,change,words", BAD_RECORDS, ids=[r[0] for r in BAD_RECORDS])
def test_invalid_records_are_refused_by_both_modules(converged, about, change, words):
    cluster, workdir = converged
    version, voters, records = state(cluster)
    with cluster.client() as client:
        machines = client.stateserver.machines
        if isinstance(change, tuple):
            machines.update_one(*change)
        else:
            machines.insert_one(change)
        tampered = list(machines.find({}, {"created": 0}).sort("_id", 1))
        try:
            run = run_tasks(workdir / f"records-{about}", [ea(cluster), pg(cluster)])
            for result in run.results:
                assert_refused(result, words + ["not valid"])
            after = state(cluster)
            assert after[:2] == (version, voters)
            assert after[2] == tampered  # nothing was rewritten either
        finally:
            machines.delete_many({})
            machines.insert_many(records)
    assert state(cluster)[:2] == (version, voters)


def _set_record(cluster: Cluster, name: str, **fields) -> None:
    with cluster.client() as client:
        client.stateserver.machines.update_one({"_id": name}, {"$set": fields})


def test_one_voter_wanting_no_vote_keeps_three_voters(converged):
    """Issue 12: wants_vote null/0/false on one voter took a healthy 3-voter set to 1 voter."""
    cluster, workdir = converged
    version, voters, _records = state(cluster)
    _set_record(cluster, "sm3", wants_vote=False)
    try:
        run = run_tasks(workdir / "wants-false", [pg(cluster)])
        assert run[0].get("failed") is not True and run[0]["changed"] is False, run[0]
        assert state(cluster)[:2] == (version, voters)
    finally:
        _set_record(cluster, "sm3", wants_vote=True)


def test_deleted_records_of_two_voters_remove_nothing_and_are_written_again(converged):
    cluster, workdir = converged
    version, voters, records = state(cluster)
    with cluster.client() as client:
        client.stateserver.machines.delete_many({"_id": {"$in": ["sm2", "sm3"]}})
    run = run_tasks(workdir / "deleted", [pg(cluster), ea(cluster), pg(cluster)])
    first_pg, plan, second_pg = run.results
    assert first_pg.get("failed") is not True and first_pg["changed"] is False, first_pg
    assert plan.get("failed") is not True and plan["changed"] is True and plan["added"] == [], plan
    assert second_pg.get("failed") is not True and second_pg["changed"] is False, second_pg
    assert state(cluster) == (version, voters, records)


def test_a_record_moved_to_a_dead_host_is_repaired_from_the_pool(converged):
    """Issue 12: a record whose mongo_address changed to a dead host moved a healthy voter onto it; re-running with
    the (correct) pool did not repair it."""
    cluster, workdir = converged
    version, voters, records = state(cluster)
    dead = cluster.addresses[3]
    _set_record(cluster, "sm3", mongo_address=dead)
    run = run_tasks(workdir / "moved-check", [ea(cluster)], check=True, diff=True)
    check = run[0]
    assert check.get("failed") is not True and check["changed"] is True, check
    assert check["repaired"] == [f"sm3 ({dead} -> {cluster.addresses[2]}, the new address answers as its member)"]
    assert any("repairing the address of machine sm3" in line for line in check["report"])
    assert {r["name"]: r["mongo_address"] for r in check["diff"]["before"]["records"]}["sm3"] == dead
    assert {r["name"]: r["mongo_address"] for r in check["diff"]["after"]["records"]}["sm3"] == cluster.addresses[2]
    assert {r["_id"]: r["mongo_address"] for r in state(cluster)[2]}["sm3"] == dead  # check mode wrote nothing
    run = run_tasks(workdir / "moved", [ea(cluster), pg(cluster)])
    assert run[0].get("failed") is not True and run[0]["repaired"], run[0]
    assert run[1].get("failed") is not True and run[1]["changed"] is False, run[1]
    assert state(cluster) == (version, voters, records)


def test_an_inventory_moving_a_healthy_voter_to_a_dead_host_is_refused(converged):
    cluster, workdir = converged
    before = state(cluster)
    moved = pool(cluster)
    moved[2] = {"name": "sm3", "address": cluster.hosts[3]}
    run = run_tasks(workdir / "inventory-dead", [ea(cluster, pool=moved)])
    assert_refused(run[0], ["machine sm3", cluster.addresses[3], "nothing was changed"])
    assert state(cluster) == before


def test_first_deployment_is_decided_by_the_module(tmp_path, cluster_factory):
    """No seed answers, then every seed is an uninitiated mongod: the bootstrap machine alone, nothing written."""
    cluster = cluster_factory(size=3, start=0)
    run = run_tasks(tmp_path / "silent", [ea(cluster)])
    silent = run[0]
    assert silent.get("failed") is not True, silent
    assert silent["first_deployment"] is True and silent["bootstrap"] == "sm1" and silent["machines"] == ["sm1"]
    for i in range(3):
        cluster.sim.start(i)
    run = run_tasks(tmp_path / "uninitiated", [ea(cluster)], check=True)
    fresh = run[0]
    assert fresh.get("failed") is not True, fresh
    assert fresh["first_deployment"] is True and fresh["machines"] == ["sm1"] and fresh["records"] == []
    assert all(cluster.is_uninitiated(i) for i in range(3))


@pytest.fixture(scope="module")
def foreign_sets(tmp_path_factory):
    """Two one-member sets that are not ours: one named 'other', one that is also named 'stateserver'."""
    from mongosim import testing

    workdir = tmp_path_factory.mktemp("foreign")
    sets = []
    try:
        for name in ("other", "stateserver"):
            sim = testing.Cluster(1, block="127.20", workdir=workdir / name, set_name=name, port=37017, spare=0)
            sets.append(sim)
            sim.start(0)
            sim.initiate()
        yield [sim.members[0].address for sim in sets]
    finally:
        for sim in sets:
            sim.stop()


@pytest.mark.parametrize("which,words", [(0, ["replica set 'other'"]), (1, ["another replica set also named"])],
                         ids=["another set name", "same set name, another set"])
def test_pool_hosts_of_another_set_are_refused(converged, foreign_sets, which, words):
    """Issue 12: members of another replica set were recorded and added, and then voted in ours."""
    cluster, workdir = converged
    before = state(cluster)
    address = foreign_sets[which]
    run = run_tasks(workdir / f"foreign-{which}", [
        ea(cluster, n=5, pool=pool(cluster) + [{"name": "sm8", "address": address},
                                               {"name": "sm9", "address": cluster.hosts[3]}]),
    ])
    assert_refused(run[0], [address, "remove it from state_machines", *words])
    assert state(cluster) == before


@pytest.mark.parametrize("where", ["dead host", "member of another set", "another set of the same name"])
def test_peergroup_alone_refuses_to_move_a_healthy_voter_to_an_address_that_is_not_that_member(
        converged, foreign_sets, where):
    """Issue 12: a record whose mongo_address was hand-edited to a dead host (or to a host that answers, but as
    another set's member) made peergroup, run alone, move a healthy voter onto it."""
    cluster, workdir = converged
    version, voters, records = state(cluster)
    config = cluster.read()[0]
    target = {"dead host": cluster.addresses[3], "member of another set": foreign_sets[0],
              "another set of the same name": foreign_sets[1]}[where]
    _set_record(cluster, "sm3", mongo_address=target)
    try:
        run = run_tasks(workdir / f"pg-moved-{where}", [pg(cluster)])
        assert_refused(run[0], ["machine sm3", cluster.addresses[2], target, "nothing was changed"])
        after = cluster.read()[0]
        assert after["version"] == config["version"] and after["members"] == config["members"]
    finally:
        _set_record(cluster, "sm3", mongo_address=cluster.addresses[2])
    assert state(cluster) == (version, voters, records)

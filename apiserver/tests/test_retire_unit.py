"""A unit's view of retiring a state machine (issue 13): the API stops publishing the machine's address, the unit
drops it from its dial list, and the unit's writes go on throughout with none lost.

The fake-server tests pin the client's rule (the published list, once known, is the dial list). The live test runs
four state machines on loopback (simulated members and real API servers, TLS as deployed), retires the primary's
machine with the collection's modules through ansible-playbook, and stops its services as retire-machine.yml does.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import httpx
import pytest
from machines import SET_NAME, Machine, StateMachines, mongod_binary, wait_for
from stateserver_client import StateClient

# The integration suite's ansible-playbook runner (it links the collection into build/collections).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "integration"))
from playbook import run_tasks

A, B, C = "127.30.3.1:17070", "127.30.3.2:17070", "127.30.3.3:17070"
EA = "stateserver.ha.ensure_availability"
PG = "stateserver.ha.peergroup"


class Published:
    """API servers that answer /v1/ready and publish `published`; every host they were asked on is recorded."""

    def __init__(self, published: list[str], down: set[str] | None = None) -> None:
        self.published = published
        self.down = down or set()
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = f"{request.url.host}:{request.url.port}"
        self.asked.append(host)
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/v1/api-addresses":
            return httpx.Response(200, json={"addresses": self.published})
        return httpx.Response(200, json={"ready": True, "primary": "x", "replica_set": SET_NAME})


def fake_client(servers: Published, cache: Path, configured: list[str]) -> StateClient:
    return StateClient(configured, "tok", cache, transport=httpx.MockTransport(servers), retry_for=2.0)


def test_an_address_no_longer_published_leaves_the_dial_list(tmp_path: Path) -> None:
    servers = Published([A, B, C])
    cache = tmp_path / "cache.json"
    with fake_client(servers, cache, [A, B, C]) as client:
        client.connect()
        assert sorted(client.addresses()) == [A, B, C]
        servers.published = [B, C]  # A's record was deleted
        assert sorted(client.refresh_addresses()) == [B, C]
    # A later run, still configured with A, neither lists nor dials it.
    servers.asked.clear()
    with fake_client(servers, cache, [A, B, C]) as client:
        for _ in range(20):
            client.current = None
            client.connect()
        assert sorted(client.addresses()) == [B, C]
    assert A not in servers.asked
    assert json.loads(cache.read_text())["published"] == [B, C]


def test_configured_addresses_are_a_last_resort_when_no_published_one_answers(tmp_path: Path) -> None:
    # The cache lists only machines that have all been replaced since; the operator configured the new one.
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({"last_address": A, "published": [A, B]}))
    servers = Published([C], down={A, B})
    with fake_client(servers, cache, [C]) as client:
        assert client.addresses() == [A, B]
        assert client.connect() == C
        assert client.addresses() == [C]


class Unit(threading.Thread):
    """A unit writing new keys through the real client until stopped; each write is retried (same request id)
    until acknowledged, so `acked` is exactly the writes the API confirmed."""

    def __init__(self, client: StateClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.acked: list[str] = []
        self.failed: Exception | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                key = f"unit-{len(self.acked):06d}"
                assert self.client.put(key, {"n": len(self.acked)}, 0)["version"] == 1
                self.acked.append(key)
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            self.failed = exc

    def wait_for_more(self, count: int, timeout: float, what: str) -> None:
        target = len(self.acked) + count
        wait_for(lambda: len(self.acked) >= target or self.failed, timeout, what)
        assert self.failed is None, self.failed


def modules_args(machines: StateMachines) -> dict:
    return {"seeds": [m.mongo_address for m in machines.machines], "server_selection_timeout": 10, "tls": True,
            "tls_ca_file": machines.ca.path}


def retire(machines: StateMachines, name: str) -> dict:
    pool = [{"name": m.name, "address": m.host} for m in machines.machines]
    return {EA: {"n": 3, "pool": pool, "retire": [name], **modules_args(machines)}}


def converge(machines: StateMachines) -> dict:
    return {PG: {"timeout": 120, **modules_args(machines)}}


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(mongod_binary() is None, reason="needs .venv/bin/mongosim or $MONGOD_BIN")
def test_retiring_the_primary_machine_while_a_unit_writes(tmp_path: Path) -> None:
    machines = StateMachines(tmp_path)
    try:
        machines.start()
        # The spare: a fresh member and its API server, as provisioning leaves a pool host before ensure-ha.
        member = machines.cluster.add_node()
        spare = Machine("m4", member.ip, member)
        machines.machines.append(spare)
        machines.start_api(spare, seeds=[m.mongo_address for m in machines.machines])
        retiree = wait_for(machines.primary, 30, "a primary")
        cache = tmp_path / "unit-cache.json"
        # The unit is configured with the first three machines and sticks to the retiree's API server, so it is
        # the unit that has to move when that server stops.
        cache.write_text(json.dumps({"last_address": retiree.api_address, "published": []}))
        # A 2 s stagger instead of 50 ms: on a loaded machine the sticky server may answer later than 50 ms and
        # lose the race, and this test needs the unit on the retiree (a dead address still costs only 2 s).
        client = StateClient([m.api_address for m in machines.machines[:3]], machines.token, cache,
                             tls=machines.tls, retry_for=60.0, stagger=2.0)
        unit = Unit(client)
        unit.start()
        try:
            unit.wait_for_more(10, 60, "the unit's first writes")
            assert client.current == retiree.api_address
            before = len(unit.acked)
            run = run_tasks(tmp_path / "retire", [retire(machines, retiree.name), converge(machines),
                                                  retire(machines, retiree.name), converge(machines)])
            for result in run.results:
                assert result.get("failed") is not True, result
            assert len(unit.acked) > before  # the unit wrote while the set was reconfigured
            plan, swap, forget, remove = run.results
            assert plan["retiring"] == [retiree.name] and plan["added"] == ["m4"]
            steps = [(s["action"], s["machine"]) for s in swap["steps"]]
            # The spare votes before the retiree loses its vote, and the retiree (primary) steps down exactly once.
            assert steps.index(("promote", "m4")) < steps.index(("demote", retiree.name))
            assert [s for s in steps if s[0] == "step_down"] == [("step_down", retiree.name)]
            assert forget["removed"] == [retiree.name]
            assert [(s["action"], s["machine"]) for s in remove["steps"]] == [("remove", retiree.name)]
            # retire-machine.yml then stops the retired machine's mongod and API server.
            machines.kill_api(retiree)
            machines.cluster.terminate(retiree.member)
            unit.wait_for_more(20, 90, "writes after the retired machine stopped")
        finally:
            unit.stopping.set()
            unit.join(90)
            client.close()
        assert not unit.is_alive() and unit.failed is None, unit.failed

        remaining = [m for m in machines.machines if m is not retiree]
        # The API publishes the remaining machines only, and the unit dials only those.
        published = remaining[0].get("/v1/api-addresses", headers={"Authorization": f"Bearer {machines.token}"})
        assert sorted(published.json()["addresses"]) == sorted(m.api_address for m in remaining)
        assert client.current in [m.api_address for m in remaining]
        assert sorted(client.addresses()) == sorted(m.api_address for m in remaining)
        assert sorted(json.loads(cache.read_text())["published"]) == sorted(m.api_address for m in remaining)

        with machines.mongo() as c:
            config = c.admin.command("replSetGetConfig")["config"]
            records = sorted(r["_id"] for r in c[SET_NAME].machines.find({}))
            stored = {d["_id"]: d for d in c[SET_NAME].kv.find({"_id": {"$regex": "^unit-"}})}
        assert sorted(m["host"] for m in config["members"]) == sorted(m.mongo_address for m in remaining)
        assert all(m.get("votes", 1) == 1 for m in config["members"])
        assert records == sorted(m.name for m in remaining)
        # Every acknowledged write is there, once.
        assert set(stored) == set(unit.acked)
        assert all(d["version"] == 1 and len(d["applied"]) == 1 for d in stored.values())
    finally:
        machines.stop()

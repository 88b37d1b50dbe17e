"""/metrics of real API servers over a simulator set, read with Prometheus's text parser while the set loses a
voter, gets it back, then loses its majority: the metrics follow each change."""

from __future__ import annotations

from pathlib import Path

import pytest
from machines import Machine, StateMachines, mongod_binary, wait_for
from scrape import parse, value

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(mongod_binary() is None, reason="needs .venv/bin/mongosim or $MONGOD_BIN"),
]

SCRAPE_TOKEN = "prometheus-scrape-token-0123"


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> StateMachines:
    machines = StateMachines(tmp_path, metrics_token=SCRAPE_TOKEN)
    request.addfinalizer(machines.stop)
    return machines.start()


def scrape(machine: Machine, token: str = SCRAPE_TOKEN) -> dict:
    response = machine.get("/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=15)
    assert response.status_code == 200, response.text
    return parse(response.text)


def until(machine: Machine, what: str, predicate, timeout: float = 60) -> dict:
    """Scrape `machine` until predicate(samples) holds; the samples that satisfied it."""
    def satisfied() -> dict | None:
        got = scrape(machine)
        return got if predicate(got) else None

    return wait_for(satisfied, timeout, what, 0.3)


def test_metrics_follow_a_lost_voter_and_a_lost_majority(cluster: StateMachines) -> None:
    names = [m.name for m in cluster.machines]
    watcher = cluster.primary()
    assert watcher is not None
    got = until(watcher, "a converged set", lambda g: value(g, "stateserver_converged") == 1)
    assert (value(got, "stateserver_voters_wanted"), value(got, "stateserver_voters"),
            value(got, "stateserver_voters_healthy")) == (3, 3, 3)
    assert value(got, "stateserver_primary_present") == 1
    assert value(got, "stateserver_member_is_primary", machine=watcher.name) == 1
    for name in names:
        assert value(got, "stateserver_member_health", machine=name) == 1
        assert value(got, "stateserver_member_votes", machine=name) == 1
        assert value(got, "stateserver_machine_api_up", machine=name) == 1
        assert 0 <= value(got, "stateserver_member_replication_lag_seconds", machine=name) < 5
    assert value(got, "stateserver_config_version") >= 1 and value(got, "stateserver_last_election_seconds") >= 0
    # The bearer token opens /metrics too; the scrape token opens nothing else.
    assert value(scrape(watcher, cluster.token), "stateserver_converged") == 1
    assert watcher.get("/v1/ready", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}).status_code == 401

    # A secondary's machine dies: a voter down, its API silent, the set no longer what the records want.
    victim = next(m for m in cluster.machines if m is not watcher)
    cluster.kill(victim)
    got = until(watcher, f"{victim.name} reported down",
                lambda g: value(g, "stateserver_member_health", machine=victim.name) == 0)
    assert value(got, "stateserver_member_state", machine=victim.name, state="DOWN") == 1
    assert value(got, "stateserver_member_votes", machine=victim.name) == 1
    assert (value(got, "stateserver_voters"), value(got, "stateserver_voters_healthy")) == (3, 2)
    assert value(got, "stateserver_machine_api_up", machine=victim.name) == 0
    assert value(got, "stateserver_converged") == 0 and value(got, "stateserver_primary_present") == 1
    assert value(got, "stateserver_member_replication_lag_seconds", machine=victim.name) is None
    silent = value(got, "stateserver_member_last_heartbeat_seconds", machine=victim.name)
    later = until(watcher, "the victim's heartbeat age to grow",
                  lambda g: value(g, "stateserver_member_last_heartbeat_seconds", machine=victim.name) > silent + 1)
    assert value(later, "stateserver_member_health", machine=victim.name) == 0

    # It comes back: healthy, voting, converged again.
    cluster.start_mongo(victim)
    cluster.start_api(victim)
    got = until(watcher, "the set converged again", lambda g: value(g, "stateserver_converged") == 1)
    assert value(got, "stateserver_voters_healthy") == 3
    assert value(got, "stateserver_machine_api_up", machine=victim.name) == 1
    assert value(got, "stateserver_member_last_heartbeat_seconds", machine=victim.name) < 5

    # Two machines die: the survivor reads the set from itself, sees no primary and says where it read from.
    survivor = victim
    for machine in cluster.machines:
        if machine is not survivor:
            cluster.kill(machine)
    got = until(survivor, "no primary", lambda g: value(g, "stateserver_primary_present") == 0
                and value(g, "stateserver_status_read_success") == 1)
    assert value(got, "stateserver_status_from_primary") == 0
    assert value(got, "stateserver_voters_healthy") == 1
    for machine in cluster.machines:
        if machine is not survivor:
            assert value(got, "stateserver_machine_api_up", machine=machine.name) == 0
    assert value(got, "stateserver_member_state", machine=survivor.name, state="SECONDARY") == 1

    # The survivor counted its own scrapes (a request is counted once answered, so from the next scrape on).
    got = scrape(survivor)
    answered = value(got, "stateserver_api_requests_total", method="GET", route="/metrics", status="200")
    assert answered is not None and answered >= 1
    assert value(got, "stateserver_api_request_duration_seconds_count", method="GET", route="/metrics",
                 status="200") == answered

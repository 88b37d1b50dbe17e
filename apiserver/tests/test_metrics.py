"""/metrics over fixed readings and the in-memory backend: the set's gauges, the request counters, access."""

from __future__ import annotations

import datetime

import pytest
from fakes import MemoryBackend
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from scrape import parse, value
from stateserver_api.app import create_app
from stateserver_api.errors import NoPrimary
from stateserver_api.main import main
from stateserver_api.metrics import SetCollector, set_families
from stateserver_api.status import SetReading

TOKEN = "s3cret-token-for-tests"
SCRAPE = "scrape-only-token-0123"
NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)  # naive UTC, as pymongo returns dates
EPOCH = datetime.datetime(1970, 1, 1)


def ago(seconds: float) -> datetime.datetime:
    return NOW - datetime.timedelta(seconds=seconds)


RECORDS = [{"_id": f"m{i}", "mongo_address": f"10.0.0.{i}:37017", "api_address": f"10.0.0.{i}:17070",
            "wants_vote": True} for i in (1, 2, 3)]
CONFIG = {"_id": "stateserver", "version": 9, "term": 4, "members": [
    {"_id": i - 1, "host": f"10.0.0.{i}:37017", "votes": 1, "priority": 1.0, "tags": {"stateserver-machine": f"m{i}"}}
    for i in (1, 2, 3)]}


def member(i: int, state: int, state_str: str, optime: datetime.datetime, **extra) -> dict:
    return {"_id": i - 1, "name": f"10.0.0.{i}:37017", "health": 1.0, "state": state, "stateStr": state_str,
            "optimeDate": optime, "configVersion": 9, "configTerm": 4, **extra}


def healthy_status() -> dict:
    return {"set": "stateserver", "date": NOW, "members": [
        member(1, 1, "PRIMARY", ago(0), self=True, electionDate=ago(300), uptime=900),
        member(2, 2, "SECONDARY", ago(2.5), lastHeartbeatRecv=ago(0.4)),
        member(3, 2, "SECONDARY", ago(0), lastHeartbeatRecv=ago(0.2)),
    ]}


def exposition(reading: SetReading | None, answers: dict[str, bool] | None = None) -> dict:
    registry = CollectorRegistry()
    registry.register(SetCollector(lambda: _or_raise(reading), lambda addresses: answers or {}))
    return parse(generate_latest(registry).decode())


def _or_raise(reading: SetReading | None) -> SetReading:
    if reading is None:
        raise NoPrimary("no writable primary reachable: timed out")
    return reading


def test_a_healthy_converged_set() -> None:
    answers = {f"10.0.0.{i}:17070": True for i in (1, 2, 3)}
    got = exposition(SetReading(RECORDS, CONFIG, healthy_status(), from_primary=True), answers)
    for name in ("stateserver_status_read_success", "stateserver_status_from_primary", "stateserver_primary_present",
                 "stateserver_converged"):
        assert value(got, name) == 1, name
    assert (value(got, "stateserver_voters_wanted"), value(got, "stateserver_voters"),
            value(got, "stateserver_voters_healthy")) == (3, 3, 3)
    assert (value(got, "stateserver_config_version"), value(got, "stateserver_config_term")) == (9, 4)
    assert value(got, "stateserver_last_election_seconds") == 300
    assert value(got, "stateserver_member_is_primary", machine="m1") == 1
    assert value(got, "stateserver_member_is_primary", machine="m2") == 0
    assert value(got, "stateserver_member_state", machine="m2", state="SECONDARY") == 1
    assert value(got, "stateserver_member_state", machine="m2", state="PRIMARY") is None
    assert value(got, "stateserver_member_replication_lag_seconds", machine="m2") == 2.5
    assert value(got, "stateserver_member_replication_lag_seconds", machine="m1") == 0
    assert value(got, "stateserver_member_last_heartbeat_seconds", machine="m3") == pytest.approx(0.2)
    # The member that answered has no heartbeat from itself.
    assert value(got, "stateserver_member_last_heartbeat_seconds", machine="m1") is None
    assert value(got, "stateserver_member_votes", machine="m3", host="10.0.0.3:37017", member_id="2") == 1
    assert value(got, "stateserver_machine_api_up", machine="m2", address="10.0.0.2:17070") == 1


def test_a_voter_down_and_its_api_silent() -> None:
    status = healthy_status()
    status["members"][2] = {"_id": 2, "name": "10.0.0.3:37017", "health": 0.0, "state": 8,
                            "stateStr": "(not reachable/healthy)", "optimeDate": EPOCH, "lastHeartbeatRecv": ago(42)}
    answers = {"10.0.0.1:17070": True, "10.0.0.2:17070": True, "10.0.0.3:17070": False}
    got = exposition(SetReading(RECORDS, CONFIG, status, from_primary=True), answers)
    assert value(got, "stateserver_member_health", machine="m3") == 0
    assert value(got, "stateserver_member_state", machine="m3", state="DOWN") == 1
    assert value(got, "stateserver_member_votes", machine="m3") == 1
    assert value(got, "stateserver_member_last_heartbeat_seconds", machine="m3") == 42
    # A down member's optime is the epoch: no lag is claimed for it.
    assert value(got, "stateserver_member_replication_lag_seconds", machine="m3") is None
    assert (value(got, "stateserver_voters"), value(got, "stateserver_voters_healthy")) == (3, 2)
    assert value(got, "stateserver_converged") == 0
    assert value(got, "stateserver_primary_present") == 1
    assert value(got, "stateserver_machine_api_up", machine="m3") == 0


def test_no_primary_read_from_a_secondary() -> None:
    status = healthy_status()
    status["members"][0].update(state=2, stateStr="SECONDARY")
    got = exposition(SetReading(RECORDS, CONFIG, status, from_primary=False))
    assert (value(got, "stateserver_primary_present"), value(got, "stateserver_status_from_primary")) == (0, 0)
    assert value(got, "stateserver_last_election_seconds") is None
    assert value(got, "stateserver_member_replication_lag_seconds", machine="m2") is None
    assert value(got, "stateserver_converged") == 0


def test_records_against_the_set() -> None:
    # A fourth machine recorded (ensure_availability grew the records) but not yet a member: peergroup has work.
    records = [*RECORDS, {"_id": "m4", "mongo_address": "10.0.0.4:37017", "api_address": "10.0.0.4:17070",
                          "wants_vote": True}]
    got = exposition(SetReading(records, CONFIG, healthy_status(), from_primary=True))
    assert (value(got, "stateserver_voters_wanted"), value(got, "stateserver_converged")) == (4, 0)
    records = [dict(r) for r in RECORDS]
    # A damaged record is counted and the set is not called converged (every tool refuses to act on it).
    records[1] = {"_id": "m2", "mongo_address": "nowhere", "api_address": "10.0.0.2:17070", "wants_vote": True}
    got = exposition(SetReading(records, CONFIG, healthy_status(), from_primary=True))
    assert value(got, "stateserver_record_problems") == 1
    assert value(got, "stateserver_converged") == 0
    assert value(got, "stateserver_machine_api_up", machine="m2") is None


def test_an_unreadable_set_is_a_metric_not_a_failed_scrape() -> None:
    got = exposition(None)
    assert (value(got, "stateserver_status_read_success"), value(got, "stateserver_primary_present")) == (0, 0)
    assert "stateserver_member_health" not in got


def test_member_metrics_name_the_machine_of_an_untagged_member() -> None:
    config = {**CONFIG, "members": [{k: v for k, v in m.items() if k != "tags"} for m in CONFIG["members"]]}
    families = set_families(SetReading(RECORDS, config, healthy_status(), from_primary=True), {}, NOW)
    health = next(f for f in families if f.name == "stateserver_member_health")
    assert sorted(s.labels["machine"] for s in health.samples) == ["m1", "m2", "m3"]


# -- over HTTP ----------------------------------------------------------------------------------------------------

@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def client(backend: MemoryBackend) -> TestClient:
    app = create_app(backend, TOKEN, scrape_token=SCRAPE, probe=lambda addresses: dict.fromkeys(addresses, True))
    return TestClient(app, raise_server_exceptions=False)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {SCRAPE}", f"Bearer {SCRAPE}x"])
def test_metrics_need_a_token(client: TestClient, header: str | None) -> None:
    response = client.get("/metrics", headers={"Authorization": header} if header else {})
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/v1/ready", "/v1/ha-status", "/v1/kv/a", "/v1/openapi.json"])
def test_the_scrape_token_opens_nothing_else(client: TestClient, path: str) -> None:
    assert client.get(path, headers=bearer(SCRAPE)).status_code == 401


@pytest.mark.parametrize("token", [TOKEN, SCRAPE])
def test_metrics_in_prometheus_text_format(client: TestClient, token: str) -> None:
    response = client.get("/metrics", headers=bearer(token))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    got = parse(response.text)
    assert value(got, "stateserver_primary_present") == 1
    assert value(got, "stateserver_machine_api_up", machine="m1") == 1


def test_request_counts_and_latencies_by_route_and_status(client: TestClient) -> None:
    client.put("/v1/kv/a", headers=bearer(TOKEN), json={"value": 1, "version": 0, "request_id": "r1"})
    client.put("/v1/kv/b", headers=bearer(TOKEN), json={"value": 1, "version": 0, "request_id": "r2"})
    client.put("/v1/kv/a", headers=bearer(TOKEN), json={"value": 2, "version": 0, "request_id": "r3"})  # 409
    client.get("/v1/kv/a", headers=bearer("wrong"))  # 401, still counted under its route
    client.get("/wp-login.php/../x")  # a scanner: one "other" series, not one per path
    got = parse(client.get("/metrics", headers=bearer(SCRAPE)).text)
    counted = "stateserver_api_requests_total"
    assert value(got, counted, method="PUT", route="/v1/kv/{key}", status="200") == 2
    assert value(got, counted, method="PUT", route="/v1/kv/{key}", status="409") == 1
    assert value(got, counted, method="GET", route="/v1/kv/{key}", status="401") == 1
    assert value(got, counted, method="GET", route="other", status="401") == 1
    assert value(got, "stateserver_api_request_duration_seconds_count", method="PUT", route="/v1/kv/{key}",
                 status="200") == 2
    assert value(got, "stateserver_api_request_duration_seconds_bucket", method="PUT", route="/v1/kv/{key}",
                 status="200", le="+Inf") == 2
    assert not any("/v1/kv/a" in labels.get("route", "") for labels, _ in got[counted])


def test_a_scrape_without_a_primary_still_answers(client: TestClient, backend: MemoryBackend) -> None:
    backend.down = "no writable primary reachable: timed out"
    response = client.get("/metrics", headers=bearer(SCRAPE))
    assert response.status_code == 200
    assert value(parse(response.text), "stateserver_status_read_success") == 0


def test_the_scrape_token_must_differ_from_the_bearer_token() -> None:
    with pytest.raises(ValueError, match="differ"):
        create_app(MemoryBackend(), TOKEN, scrape_token=TOKEN)


def test_the_server_reads_the_scrape_token_from_a_file(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    token, scrape = tmp_path / "token", tmp_path / "scrape"
    token.write_text(TOKEN + "\n")
    scrape.write_text(SCRAPE + "\n")
    args = ["--host", "127.0.0.1", "--token-file", str(token), "--insecure-http", "--check-config"]
    assert main([*args, "--metrics-token-file", str(scrape)]) == 0
    assert "usable" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="holds the bearer token"):
        main([*args, "--metrics-token-file", str(token)])
    with pytest.raises(SystemExit, match="cannot read the metrics token file"):
        main([*args, "--metrics-token-file", str(tmp_path / "missing")])


def test_a_bug_is_counted_as_a_500(client: TestClient, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(key: str) -> dict:
        raise RuntimeError("a bug")

    monkeypatch.setattr(backend, "kv_get", broken)
    assert client.get("/v1/kv/a", headers=bearer(TOKEN)).status_code == 500
    got = parse(client.get("/metrics", headers=bearer(SCRAPE)).text)
    assert value(got, "stateserver_api_requests_total", method="GET", route="/v1/kv/{key}", status="500") == 1

"""The client against fake transports: sticky cache, retries with one request id, address refresh."""

import json
import random
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest
from stateserver_client import (
    ClientConfig,
    ClientError,
    StateClient,
    Unavailable,
    VersionConflict,
)
from stateserver_client.cli import main as cli_main

A, B, C = "127.30.2.1:17070", "127.30.2.2:17070", "127.30.2.3:17070"


class FakeServers:
    """Routes by host: `down` hosts refuse connections, `flaky` answers 503 to the next N writes."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.flaky_writes = 0
        self.published = [A, B]
        self.calls: list[tuple[str, str, str]] = []
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        self.kv: dict[str, int] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = f"{request.url.host}:{request.url.port}"
        with self.lock:
            self.calls.append((host, request.method, request.url.path))
        if request.headers.get("authorization") != "Bearer tok":
            return httpx.Response(401, json={"detail": "missing or invalid bearer token"})
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/v1/ready":
            return httpx.Response(200, json={"ready": True, "primary": "x", "replica_set": "stateserver"})
        if path == "/v1/api-addresses":
            return httpx.Response(200, json={"addresses": self.published})
        if path.startswith("/v1/kv/") and request.method == "PUT":
            body = json.loads(request.content)
            self.bodies.append(body)
            if self.flaky_writes:
                self.flaky_writes -= 1
                return httpx.Response(503, json={"detail": "no writable primary reachable"})
            key = path.rsplit("/", 1)[1]
            if self.kv.get(key, 0) != body["version"]:
                return httpx.Response(409, json={"detail": "stale", "current_version": self.kv.get(key, 0)})
            self.kv[key] = body["version"] + 1
            return httpx.Response(200, json={"key": key, "version": self.kv[key], "replayed": False})
        return httpx.Response(404, json={"detail": "no such thing"})

    def hosts_probed(self) -> list[str]:
        return [h for h, _, p in self.calls if p == "/v1/ready"]


def make(servers: FakeServers, tmp_path: Path, seed: int = 0, addresses: list[str] | None = None,
         retry_for: float = 5.0) -> StateClient:
    return StateClient(addresses or [A, B, C], "tok", tmp_path / "cache.json", rng=random.Random(seed),
                       stagger=0.01, retry_for=retry_for, transport=httpx.MockTransport(servers))


def test_the_address_that_worked_is_stored_and_tried_first_next_time(tmp_path: Path) -> None:
    servers = FakeServers()
    with make(servers, tmp_path, seed=1) as first:
        used = first.connect()
    cache = tmp_path / "cache.json"
    assert json.loads(cache.read_text())["last_address"] == used
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]  # no temp file left behind
    for seed in range(20):  # whatever the random seed, the stored address comes first
        servers.calls.clear()
        with make(servers, tmp_path, seed=seed) as again:
            assert again.connect() == used
        assert servers.hosts_probed()[0] == used


def test_a_dead_sticky_address_falls_through_and_the_new_one_is_stored(tmp_path: Path) -> None:
    servers = FakeServers()
    with make(servers, tmp_path) as client:
        dead = client.connect()
    servers.down.add(dead)
    servers.calls.clear()
    with make(servers, tmp_path, seed=3) as client:
        alive = client.connect()
    assert alive != dead
    assert servers.hosts_probed()[0] == dead  # still tried first: it is the stored one
    assert json.loads((tmp_path / "cache.json").read_text())["last_address"] == alive


def test_first_choice_follows_the_seeded_rng(tmp_path: Path) -> None:
    servers = FakeServers()
    firsts = set()
    for seed in range(30):
        servers.calls.clear()
        client = StateClient([A, B, C], "tok", None, rng=random.Random(seed), stagger=0.2,
                             transport=httpx.MockTransport(servers))
        with client:
            assert client.connect() == servers.hosts_probed()[0]
            firsts.add(servers.hosts_probed()[0])
    assert firsts == {A, B, C}


def test_a_retried_write_carries_the_same_request_id(tmp_path: Path) -> None:
    servers = FakeServers()
    servers.flaky_writes = 2
    with make(servers, tmp_path) as client:
        assert client.put("k", {"n": 1}, 0) == {"key": "k", "version": 1, "replayed": False}
    assert len(servers.bodies) == 3
    assert len({b["request_id"] for b in servers.bodies}) == 1


def test_a_write_survives_its_server_dying_mid_loop(tmp_path: Path) -> None:
    servers = FakeServers()
    with make(servers, tmp_path) as client:
        client.put("k", 1, 0)
        servers.down.add(client.current)
        assert client.put("k", 2, 1)["version"] == 2
        assert client.current not in servers.down


def test_a_refused_token_fails_at_once(tmp_path: Path) -> None:
    servers = FakeServers()
    client = StateClient([A, B], "wrong", None, stagger=0.01, retry_for=30.0, transport=httpx.MockTransport(servers))
    started = time.monotonic()
    with client, pytest.raises(ClientError) as refused:
        client.put("k", 1, 0)
    assert refused.value.status == 401
    assert time.monotonic() - started < 10  # not the 30 s retry window
    assert servers.bodies == []


def test_conflict_is_not_retried(tmp_path: Path) -> None:
    servers = FakeServers()
    with make(servers, tmp_path) as client:
        client.put("k", 1, 0)
        with pytest.raises(VersionConflict) as conflict:
            client.put("k", 1, 0)
    assert conflict.value.current_version == 1
    assert len(servers.bodies) == 2


def test_gives_up_after_its_deadline_when_nothing_answers(tmp_path: Path) -> None:
    servers = FakeServers()
    servers.down = {A, B, C}
    with make(servers, tmp_path, retry_for=0.5) as client, pytest.raises(Unavailable):
        client.put("k", 1, 0)


def test_refresh_adds_published_addresses_and_keeps_them(tmp_path: Path) -> None:
    servers = FakeServers()
    servers.published = [A, B, "127.30.2.9:17070"]
    with make(servers, tmp_path, addresses=[A]) as client:
        assert client.refresh_addresses() == [A, B, "127.30.2.9:17070"]
    with make(servers, tmp_path, addresses=[A]) as client:
        assert set(client.addresses()) == {A, B, "127.30.2.9:17070"}
    servers.published = []  # an empty published list never wipes what we know
    with make(servers, tmp_path, addresses=[A]) as client:
        assert "127.30.2.9:17070" in client.refresh_addresses()


def test_connecting_refreshes_the_published_list(tmp_path: Path) -> None:
    servers = FakeServers()
    servers.published = [A, "127.30.2.7:17070"]
    with make(servers, tmp_path, addresses=[A]) as client:
        client.connect()
        assert client.addresses() == [A, "127.30.2.7:17070"]
    assert json.loads((tmp_path / "cache.json").read_text())["published"] == [A, "127.30.2.7:17070"]


def test_a_torn_cache_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "cache.json").write_text('{"last_address": "127.30.2.2:1')
    servers = FakeServers()
    with make(servers, tmp_path) as client:
        assert client.connect() in (A, B, C)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "token").write_text("tok\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"addresses": ["127.30.2.250:1"], "token_file": str(tmp_path / "token"),
                                  "cache_file": str(tmp_path / "cache.json"), "retry_for": 0.3}))
    assert cli_main(["--config", str(config), "ready"]) == 3  # nothing listens there
    assert cli_main(["--config", str(tmp_path / "missing.json"), "ready"]) == 2
    assert ClientConfig.load(config).addresses == ["127.30.2.250:1"]

"""The client against fake transports: sticky cache, retries with one request id, address refresh."""

import json
import logging
import random
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest
from stateserver_api.app import KEY_PATTERN
from stateserver_client import (
    BadName,
    ClientConfig,
    ClientError,
    StateClient,
    Unavailable,
    VersionConflict,
)
from stateserver_client.cli import main as cli_main
from stateserver_client.client import NAME_PATTERN

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
        self.html: set[str] = set()  # hosts where something else answers 200 with a web page
        self.html_conflicts = False  # a proxy's 409 page instead of the API's

    def page(self, status: int) -> httpx.Response:
        return httpx.Response(status, text="<html><body>Welcome to nginx!</body></html>",
                              headers={"Content-Type": "text/html"})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = f"{request.url.host}:{request.url.port}"
        with self.lock:
            self.calls.append((host, request.method, request.url.path))
        if request.headers.get("authorization") != "Bearer tok":
            return httpx.Response(401, json={"detail": "missing or invalid bearer token"})
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if host in self.html:
            return self.page(200)
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
                if self.html_conflicts:
                    return self.page(409)
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


def test_a_failed_refresh_is_retried_after_the_next_request_that_succeeds(tmp_path: Path) -> None:
    servers = FakeServers()
    servers.published = [A, "127.30.2.7:17070"]
    unanswered = {"left": 1}
    plain = servers.__call__

    def first_list_request_fails(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/api-addresses" and unanswered["left"]:
            unanswered["left"] -= 1
            return httpx.Response(503, json={"detail": "no writable primary reachable"})
        return plain(request)

    with StateClient([A], "tok", tmp_path / "cache.json", stagger=0.01, retry_for=5.0,
                     transport=httpx.MockTransport(first_list_request_fails)) as client:
        client.connect()
        assert client.addresses() == [A]  # the refresh at connect got no list
        client.ready()  # the connection stays: the next request that succeeds fetches the list again
        assert client.addresses() == [A, "127.30.2.7:17070"]
        client.ready()
    assert [p for _, _, p in servers.calls].count("/v1/api-addresses") == 1  # once answered, not asked again


def test_a_torn_cache_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "cache.json").write_text('{"last_address": "127.30.2.2:1')
    servers = FakeServers()
    with make(servers, tmp_path) as client:
        assert client.connect() in (A, B, C)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "token").write_text("tok\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"addresses": ["127.30.2.250:1"], "token_file": str(tmp_path / "token"),
                                  "cache_file": str(tmp_path / "cache.json"), "retry_for": 0.3,
                                  "insecure_http": True}))
    assert cli_main(["--config", str(config), "ready"]) == 3  # nothing listens there
    assert cli_main(["--config", str(tmp_path / "missing.json"), "ready"]) == 2
    assert ClientConfig.load(config).addresses == ["127.30.2.250:1"]


# Regressions: bad local files, bad answers and bad names end in a clear error, never a traceback.

@pytest.mark.parametrize("content", ["[]", '"127.30.2.1:17070"', "null", "5", '{"last_address": 5, "published": "x"}',
                                     '{"last_address": "../ready:1", "published": ["a b:1", "127.30.2.9:17070"]}'])
def test_a_cache_file_holding_anything_but_the_cache_is_ignored(tmp_path: Path, content: str) -> None:
    (tmp_path / "cache.json").write_text(content)
    servers = FakeServers()
    with make(servers, tmp_path) as client:
        assert client.cache.last_address is None
        assert client.cache.published in ([], ["127.30.2.9:17070"])
        used = client.connect()
    assert json.loads((tmp_path / "cache.json").read_text())["last_address"] == used


def test_a_cache_path_that_is_a_directory_is_a_config_error(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "token").write_text("tok\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"addresses": [A], "token_file": str(tmp_path / "token"),
                                  "cache_file": str(tmp_path), "insecure_http": True}))
    assert cli_main(["--config", str(config), "ready"]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "Traceback" not in err


def test_an_unwritable_cache_is_reported_once_and_the_request_still_succeeds(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the cache directory should be")
    servers = FakeServers()
    client = StateClient([A, B], "tok", tmp_path / "not-a-dir" / "cache.json", rng=random.Random(1), stagger=0.01,
                         transport=httpx.MockTransport(servers))
    with client, caplog.at_level(logging.WARNING, logger="stateserver_client"):
        assert client.put("k", 1, 0)["version"] == 1
        servers.down.add(client.current)  # a second connection (another cache write) is not reported again
        assert client.put("k", 2, 1)["version"] == 2
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"cannot write the address cache {tmp_path / 'not-a-dir' / 'cache.json'}"]


def test_an_html_page_on_200_is_not_taken_for_the_api(tmp_path: Path) -> None:
    servers = FakeServers()
    servers.html = {A, B}
    with make(servers, tmp_path, addresses=[A, B, C]) as client:
        assert client.put("k", 1, 0)["version"] == 1
        assert client.current == C
    servers.html = {A, B, C}
    with make(servers, tmp_path / "other", retry_for=0.3) as client, pytest.raises(Unavailable) as unavailable:
        client.get("k")
    assert "not the API's JSON" in str(unavailable.value)


def test_an_html_page_on_409_is_not_a_traceback(tmp_path: Path) -> None:
    servers = FakeServers()
    servers.html_conflicts = True
    with make(servers, tmp_path, retry_for=0.3) as client:
        client.put("k", 1, 0)
        with pytest.raises(Unavailable) as unavailable:
            client.put("k", 1, 0)
    assert "text/html" in str(unavailable.value)


def test_a_409_for_an_unreadable_entry_carries_no_version(tmp_path: Path) -> None:
    def unreadable(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/ready":
            return httpx.Response(200, json={"ready": True})
        return httpx.Response(409, json={"detail": "key 'k' is stored in a form the API cannot serve",
                                         "current_version": None})
    with StateClient([A], "tok", None, transport=httpx.MockTransport(unreadable)) as client, \
            pytest.raises(VersionConflict) as conflict:
        client.get("k")
    assert conflict.value.current_version is None and "cannot serve" in conflict.value.detail


@pytest.mark.parametrize("key", ["../ready", "k/../../units/u1", "a?x=1", "a#b", "..", ".", "%2e%2e", "", "a b",
                                 "-lead", "x" * 201, "ключ"])
def test_keys_that_could_reach_another_endpoint_are_refused_before_sending(tmp_path: Path, key: str) -> None:
    servers = FakeServers()
    with make(servers, tmp_path) as client:
        for call in (lambda: client.get(key), lambda: client.put(key, 1, 0), lambda: client.register(key),
                     lambda: client.heartbeat(key)):
            with pytest.raises(BadName):
                call()
    assert servers.calls == []


def test_the_client_refuses_exactly_the_names_the_server_refuses() -> None:
    assert NAME_PATTERN == KEY_PATTERN


def test_a_value_that_is_not_json_is_refused_before_sending(tmp_path: Path) -> None:
    servers = FakeServers()
    with make(servers, tmp_path) as client, pytest.raises(ValueError, match="cannot be sent as JSON"):
        client.put("k", float("nan"), 0)
    assert servers.bodies == []


def write_config(tmp_path: Path, **settings: object) -> Path:
    (tmp_path / "token").write_text("tok\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"addresses": ["127.30.2.250:1"], "token_file": str(tmp_path / "token"),
                                  "cache_file": str(tmp_path / "cache.json"), "retry_for": 0.3, "insecure_http": True,
                                  **settings}))
    return config


@pytest.mark.parametrize(("settings", "message"), [
    ({"retry_for": "x"}, "retry_for"), ({"retry_for": float("inf")}, "retry_for"), ({"stagger": True}, "stagger"),
    ({"request_timeout": 0}, "request_timeout"), ({"addresses": "127.30.2.1:17070"}, "addresses"),
    ({"addresses": []}, "addresses"), ({"addresses": ["h:99999"]}, "addresses"), ({"token_file": 5}, "token_file"),
    ({"cache_file": 5}, "cache_file"), ({"colour": "red"}, "colour"),
    ({"insecure_http": False}, "ca_file must name the deployment CA"), ({"ca_file": "/ca.pem"}, "insecure_http is true"),
    ({"insecure_http": "yes"}, "insecure_http must be"), ({"cert_file": "/c.pem"}, "cert_file and key_file go together"),
])
def test_bad_config_values_are_exit_2_with_the_setting_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             settings: dict, message: str) -> None:
    assert cli_main(["--config", str(write_config(tmp_path, **settings)), "ready"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("content", ["[]", '"x"', "null", "{", '{"token_file": "t"}'])
def test_a_config_file_that_is_not_a_settings_object_is_exit_2(tmp_path: Path, content: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text(content)
    assert cli_main(["--config", str(tmp_path / "config.json"), "ready"]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_an_empty_token_file_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, retry_for=60)
    (tmp_path / "token").write_text("\n")
    started = time.monotonic()
    assert cli_main(["--config", str(config), "ready"]) == 2
    assert time.monotonic() - started < 5  # not the 60 s retry window
    assert "is empty" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["get", "../ready"], "key '../ready' is not valid"), (["put", "a?x=1", "1", "--version", "0"], "is not valid"),
    (["heartbeat", "k/../../units/u1"], "unit name"), (["put", "k", "NaN", "--version", "0"], "cannot be sent"),
])
def test_cli_bad_names_and_values_are_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                            message: str) -> None:
    assert cli_main(["--config", str(write_config(tmp_path)), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err

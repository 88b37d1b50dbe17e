"""The real `stateserver-api` process under abuse: unfinished requests (slowloris), trickled requests, large bodies.
Each test asserts the server still answers /v1/live and, where it matters, what it did with the abusive connection.
The server's mongo seed is a closed port: nothing here needs a database, and liveness must not either."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from stateserver_api.limits import MAX_BODY_BYTES, Budget, connection_budget
from stateserver_api.main import bind_address_problem

VENV_BIN = Path(sys.executable).parent
TOKEN = "limits-test-token-0123456789"
AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()

ATTACKERS = 1100

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def enough_files_for_the_attack() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = ATTACKERS + 200
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"the slowloris test needs {wanted} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass
class Server:
    proc: subprocess.Popen
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def peak_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")

    def live(self, timeout: float) -> float:
        """Seconds /v1/live took to answer 200 on a fresh connection; fails when it does not answer in `timeout`."""
        started = time.monotonic()
        response = httpx.get(f"{self.base}/v1/live", timeout=timeout)
        assert response.status_code == 200, response.text
        return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def api_server(tmp_path: Path, *args: str, nofile: int | None = None) -> Iterator[Server]:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")

    command = [str(VENV_BIN / "stateserver-api"), "--host", "127.0.0.1", "--port", "PORT", "--token-file", str(token),
               "--mongo-seeds", "127.0.0.1:1", "--server-selection-timeout-ms", "200", "--insecure-http", *args]
    if nofile is not None:  # set in the child before it execs the server, which sizes its limits at start
        limit = f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile})); "
        command = [sys.executable, "-c", limit + "os.execv(sys.argv[1], sys.argv[1:])", *command]
    for _attempt in range(3):  # another process may take the free port before the server binds it
        port = free_port()
        log = (tmp_path / "api.log").open("ab")
        proc = subprocess.Popen([str(port) if part == "PORT" else part for part in command],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        server = Server(proc, port)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                server.live(timeout=1)
                break
            time.sleep(0.1)
        if proc.poll() is None and time.monotonic() < deadline:
            break
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    else:
        raise AssertionError(f"the API server did not start: {(tmp_path / 'api.log').read_text()[-2000:]}")
    try:
        yield server
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.mark.usefixtures("enough_files_for_the_attack")
def test_slowloris_unfinished_requests_do_not_stop_liveness(tmp_path: Path) -> None:
    # The server may hold 1024 files (a common default); the attack opens more unfinished requests than that, as
    # in the report. Before the fix every accepted connection stayed open until the file descriptors ran out and
    # /v1/live never answered.
    attackers: list[socket.socket] = []
    with api_server(tmp_path, nofile=1024) as server:
        assert "Max open files            1024" in Path(f"/proc/{server.proc.pid}/limits").read_text()
        try:
            for _ in range(ATTACKERS):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.sendall(b"GET /v1/ready HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # headers never finished
                attackers.append(sock)
            server.live(timeout=5)  # waits until the server has worked through the queue of attackers
            for _ in range(3):
                assert server.live(timeout=5) < 1.0
            # The server made room by closing the attackers' connections, oldest first.
            assert closed_by_server(attackers[:ATTACKERS - 600]) == ATTACKERS - 600
            assert server.proc.poll() is None
        finally:
            for sock in attackers:
                sock.close()


def closed_by_server(sockets: list[socket.socket]) -> int:
    closed = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            closed += sock.recv(1) == b""
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
    return closed


def test_a_trickling_client_is_disconnected_at_its_deadline(tmp_path: Path) -> None:
    with api_server(tmp_path, "--read-timeout", "1") as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        slow.setblocking(False)
        started = time.monotonic()
        closed_after = None
        for byte in b"GET /v1/live HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"a" * 200:
            try:
                slow.send(bytes([byte]))
                if slow.recv(1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except BlockingIOError:
                pass
            except (ConnectionResetError, BrokenPipeError):
                closed_after = time.monotonic() - started
                break
            time.sleep(0.1)
        # Each byte came well within any idle timeout, yet the request as a whole had 1 s.
        assert closed_after is not None, "the trickling connection was never closed"
        assert closed_after < 10
        silent.settimeout(10)
        assert silent.recv(1) == b""  # a connection that never sends anything is closed too
        assert server.live(timeout=5) < 1.0


def test_a_large_body_is_refused_before_it_is_read(tmp_path: Path) -> None:
    body_size = 200 * 1024 * 1024
    with api_server(tmp_path) as server:
        baseline = server.peak_rss_kib()
        # Declared length: the answer comes before any of the body is sent.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: application/json\r\n"
                         + f"Content-Length: {body_size}\r\n\r\n".encode())
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
        assert b"connection: close" in answer.lower()

        # Chunked: the server stops reading once the limit is passed and closes the connection, so the sender
        # cannot push the 200 MB through.
        sent = 0
        chunk = b"%x\r\n%s\r\n" % (1024 * 1024, b"[" + b"1," * (512 * 1024 - 1) + b"1")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            with contextlib.suppress(ConnectionResetError, BrokenPipeError, TimeoutError):
                while sent < body_size:
                    sock.sendall(chunk)
                    sent += len(chunk)
        assert sent < body_size // 4, f"the server read {sent} bytes of an over-limit body"
        assert server.live(timeout=5) < 1.0
        # Before the fix the server grew by several times the body; now by at most a few times the limit.
        grown_kib = server.peak_rss_kib() - baseline
        assert grown_kib < 64 * 1024, f"the server's peak memory grew by {grown_kib} KiB"


def test_an_over_limit_chunked_body_is_answered_413(tmp_path: Path) -> None:
    over = MAX_BODY_BYTES + 1024
    with api_server(tmp_path) as server:
        content = (b"x" * 4096 for _ in range(over // 4096 + 1))  # a generator: httpx sends it chunked
        response = httpx.put(f"{server.base}/v1/kv/k", content=content, timeout=10,
                             headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        assert response.status_code == 413
        assert str(MAX_BODY_BYTES) in response.json()["detail"]
        assert server.live(timeout=5) < 1.0


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "0", "::0", "0:0:0:0:0:0:0:0", "0x0", "0.0", "000.000.000.000",
                                  "::ffff:0.0.0.0", "", " "])
def test_every_spelling_of_the_wildcard_address_is_refused(host: str) -> None:
    problem = bind_address_problem(host)
    assert problem is not None
    assert "own address" in problem


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.30.9.1"])
def test_own_addresses_are_accepted(host: str) -> None:
    assert bind_address_problem(host) is None


def test_the_server_refuses_to_start_on_a_wildcard_address(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    for host in ("0x0", "::0"):
        run = subprocess.run([str(VENV_BIN / "stateserver-api"), "--host", host, "--port", str(free_port()),
                              "--token-file", str(token)], capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 2
        assert "wildcard address" in run.stderr and "Traceback" not in run.stderr


def test_wait_live_returns_once_the_server_answers(tmp_path: Path) -> None:
    """What the systemd unit runs after starting the server, so a (throttled) restart ends only when it answers."""
    def wait_live(port: int, seconds: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "stateserver-api"), "--host", "127.0.0.1", "--port", str(port),
                               "--token-file", str(tmp_path / "token"), "--insecure-http", "--wait-live", seconds],
                              capture_output=True, text=True, timeout=60, check=False)

    with api_server(tmp_path) as server:
        assert wait_live(server.port, "10").returncode == 0
    nobody = wait_live(free_port(), "0.5")
    assert nobody.returncode == 1 and "did not answer within 0.5s" in nobody.stderr


@pytest.mark.parametrize(("nofile", "requested", "expected"), [
    (1024, 0, Budget(512, 64)),  # the common default limit: room for four accept bursts and a quarter spare
    (16384, 0, Budget(4096, 1024)),  # the role's LimitNOFILE
    (16384, 100, Budget(100, 1024)),
    (1024, 100_000, Budget(512, 64)),  # never more than the file limit allows, whatever is asked
    (128, 0, Budget(16, 16)),
])
def test_the_connection_cap_fits_the_file_limit(monkeypatch: pytest.MonkeyPatch, nofile: int, requested: int,
                                                 expected: Budget) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (nofile, nofile))
    budget = connection_budget(requested)
    assert budget == expected
    if nofile >= 1024:
        assert budget.max_connections + 4 * budget.backlog + nofile // 4 <= nofile

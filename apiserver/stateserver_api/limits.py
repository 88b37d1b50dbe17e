"""Limits that keep unauthenticated or unfinished requests from using up the server: a deadline for receiving each
request, a cap on open connections that closes the oldest connection still waiting for its request, and a body
size limit enforced while the body arrives.

uvicorn alone has none of the first two: its keep-alive timer is cancelled by every byte received, so a client that
sends a header line every few seconds holds a connection (and a file descriptor) for ever, and enough of them stop
the server from accepting anything, liveness checks included. `limit_concurrency` does not help: it counts those
idle connections too and answers 503 to every new request, /v1/live included, once they fill it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("stateserver_api")

# A request line plus headers larger than this is refused by h11 (400) before it is parsed further.
MAX_HEADER_BYTES = 8 * 1024
# A value of 64 KiB (UTF-8) takes up to three times that when a client escapes every character (\u00e9 is six bytes
# for two); the rest leaves room for indentation and the other fields.
MAX_BODY_BYTES = 512 * 1024
# An idle keep-alive connection is closed after this many seconds without a new request.
KEEP_ALIVE_SECONDS = 5
DEFAULT_MAX_CONNECTIONS = 4096
DEFAULT_BACKLOG = 1024
# Report closed connections at most this often: an attack must not also flood the journal.
REPORT_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class Budget:
    """How many client connections stay open at once, and how many asyncio accepts in one burst (the listen
    backlog) before the connections it made can be looked at."""

    max_connections: int
    backlog: int


def connection_budget(requested: int = 0) -> Budget:
    """Fit the connections into the file descriptor limit. asyncio accepts up to `backlog` connections per loop
    iteration and they reach the protocol (where the cap closes the oldest waiting one) two iterations later, whose
    socket is closed one more iteration later: so the cap plus four bursts, plus a quarter of the limit (at least 64)
    for the database connections, logs and the listening socket, must stay below the limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return Budget(requested or DEFAULT_MAX_CONNECTIONS, DEFAULT_BACKLOG)
    backlog = max(16, min(DEFAULT_BACKLOG, soft // 16))
    ceiling = soft - 4 * backlog - max(64, soft // 4)
    return Budget(max(16, min(requested or DEFAULT_MAX_CONNECTIONS, ceiling)), backlog)


class _Guard:
    """State shared by the connections of one server: which are waiting for a request, oldest first."""

    def __init__(self, max_connections: int, read_timeout: float) -> None:
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.open = 0
        # Insertion-ordered: the first key is the connection that has waited longest for its request.
        self.waiting: dict[GuardedProtocol, None] = {}
        self.closed = {"timed out": 0, "evicted": 0, "refused": 0}
        self.reported = time.monotonic()

    def note(self, why: str) -> None:
        self.closed[why] += 1
        now = time.monotonic()
        if now - self.reported >= REPORT_EVERY_SECONDS:
            log.warning("closed connections", extra={"event": "connection-limits", "reason": ", ".join(
                f"{count} {why}" for why, count in self.closed.items() if count)})
            self.closed = dict.fromkeys(self.closed, 0)
            self.reported = now


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline per request and a connection cap (see the module docstring)."""

    guard: _Guard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._counted = True
        self._deadline: asyncio.TimerHandle | None = None
        self.guard.open += 1
        if self.guard.open > self.guard.max_connections:
            # Make room by closing the connection that has waited longest without completing a request: a real
            # client sends its request within a round trip, so it is never the oldest waiting one for long.
            if self.guard.waiting:
                next(iter(self.guard.waiting))._drop("evicted")
            else:  # every connection is being served: this one has to wait for a free slot elsewhere
                self._drop("refused")
                return
        self._wait_for_request()

    def _wait_for_request(self) -> None:
        self.guard.waiting.pop(self, None)
        self.guard.waiting[self] = None
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.guard.read_timeout, self._deadline_passed)

    def _deadline_passed(self) -> None:
        # IDLE: the request line or headers are still incomplete; SEND_BODY: the body is. Either way the client has
        # had read_timeout seconds, however many bytes it trickled in meanwhile.
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self._drop("timed out")

    def _drop(self, why: str) -> None:
        self._release()
        self.guard.note(why)
        self.transport.close()

    def _release(self) -> None:
        self.guard.waiting.pop(self, None)
        if self._counted:
            self._counted = False
            self.guard.open -= 1

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            # The request is with the app now; it is no longer a candidate for eviction. Its deadline still runs
            # until the body has arrived.
            self.guard.waiting.pop(self, None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._wait_for_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)


def guarded_protocol(max_connections: int, read_timeout: float) -> type[GuardedProtocol]:
    """A protocol class for uvicorn's `http=` with its own guard (one per server)."""
    return type("GuardedProtocol", (GuardedProtocol,), {"guard": _Guard(max_connections, read_timeout)})


class BodyLimit:
    """ASGI middleware: the app gets the whole body at once, and a body over `limit` bytes is answered 413 with
    the connection closed, refused on its Content-Length before a byte is read or as soon as a chunked body passes
    the limit, so no request makes the server hold more than `limit` bytes of it."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._answer(send, 413, f"the request body is larger than {self.limit} bytes")
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # The client went away (or missed its read deadline); uvicorn drops an answer to a closed connection.
                await self._answer(send, 400, "the request body did not arrive")
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._answer(send, 413, f"the request body is larger than {self.limit} bytes")
                return
            if not message.get("more_body", False):
                break
        body: dict[str, Any] | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> dict[str, Any]:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _answer(send: Any, status: int, detail: str) -> None:
        payload = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


class HandshakeDeadlineServer(uvicorn.Server):
    """uvicorn's server with a deadline on TLS handshakes. A connection still in its handshake is not yet the guard's
    (the protocol sees it only once the handshake is done), and asyncio would let it sit silent for 60 s: it gets the
    deadline a client has to send its request instead. None: plain HTTP, no handshake."""

    def __init__(self, config: uvicorn.Config, handshake_timeout: float | None) -> None:
        super().__init__(config)
        self.handshake_timeout = handshake_timeout

    async def startup(self, sockets: Any = None) -> None:
        if self.handshake_timeout is None:
            await super().startup(sockets)
            return
        loop = asyncio.get_running_loop()
        # uvicorn does not pass asyncio's ssl_handshake_timeout on; shadow the loop's method while it starts listening.
        loop.create_server = functools.partial(loop.create_server,  # type: ignore[method-assign]
                                               ssl_handshake_timeout=self.handshake_timeout)
        try:
            await super().startup(sockets)
        finally:
            del loop.create_server

"""TLS as mongod does it (``net.tls.*`` / ``--tls*``): one port for TLS and plain clients, told apart by the first
wire header, and member-to-member connections encrypted in preferTLS and requireTLS.

* ``settings(flat)`` validates the options with mongod's startup messages (raises UsageError).
* ``server_context`` / ``client_context`` build the SSL contexts once, at startup.
* ``classify(sock)`` peeks at a new connection: ``"tls"``, ``"plain"`` or ``"http"``.

What the standard library cannot do exactly: mongod completes the handshake with a client that sends no (or a bad)
certificate and drops the connection afterwards; here the handshake itself fails. A client sees a closed connection
either way.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from dataclasses import dataclass

MODES = ("disabled", "allowTLS", "preferTLS", "requireTLS")
HEADER = 16
# How long a new connection may take to send its first wire header before it is dropped.
FIRST_BYTES_TIMEOUT = 10.0


class TlsConfigError(ValueError):
    """An invalid combination of TLS options (mongod refuses to start with BadValue)."""


@dataclass(frozen=True)
class TlsSettings:
    mode: str = "disabled"
    certificate_key_file: str | None = None
    ca_file: str | None = None
    allow_connections_without_certificates: bool = False

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    @property
    def outbound(self) -> bool:
        """Members connect to each other over TLS only in preferTLS and requireTLS (allowTLS sends plain)."""
        return self.mode in ("preferTLS", "requireTLS")


def settings(flat: dict) -> TlsSettings:
    """The TLS settings from dotted config keys (``net.tls.mode``…), checked as mongod checks them at startup."""
    mode = flat.get("net.tls.mode", "disabled")
    if mode not in MODES:
        raise TlsConfigError(f"BadValue: unsupported value for tlsMode {mode}")
    cert = flat.get("net.tls.certificateKeyFile")
    ca = flat.get("net.tls.CAFile")
    allow = flat.get("net.tls.allowConnectionsWithoutCertificates", False)
    if isinstance(allow, str):
        allow = allow.lower() in ("true", "1", "yes")
    if mode == "disabled":
        if cert or ca or allow:
            raise TlsConfigError("BadValue: need to enable TLS via the sslMode/tlsMode flag when using TLS "
                                 "configuration parameters")
        return TlsSettings()
    if not cert:
        raise TlsConfigError("BadValue: need tlsCertificateKeyFile or certificateSelector when TLS is enabled")
    if not ca:
        raise TlsConfigError("BadValue: The use of TLS without specifying a chain of trust is no longer supported")
    return TlsSettings(mode, str(cert), str(ca), bool(allow))


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """Inbound: present certificateKeyFile; ask clients for a certificate signed by CAFile (required unless
    allowConnectionsWithoutCertificates). TLS 1.0 stays off, as in mongod by default."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.load_cert_chain(tls.certificate_key_file)
    ctx.load_verify_locations(tls.ca_file)
    ctx.verify_mode = ssl.CERT_OPTIONAL if tls.allow_connections_without_certificates else ssl.CERT_REQUIRED
    return ctx


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """Outbound (to other members): verify the peer against CAFile and the host string of the config; present
    certificateKeyFile as the client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.load_verify_locations(tls.ca_file)
    ctx.load_cert_chain(tls.certificate_key_file)
    return ctx


async def _peek(sock: socket.socket, n: int, timeout: float) -> bytes:
    """Up to ``n`` bytes the peer sent, left in the socket; fewer only at end of stream or after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = sock.recv(n, socket.MSG_PEEK)
        except BlockingIOError:
            data = None
        if data is not None and (len(data) >= n or not data):
            return data
        left = deadline - time.monotonic()
        if left <= 0:
            return data or b""
        if data:
            await asyncio.sleep(min(0.01, left))  # part of the header is there: the rest is on its way
            continue
        ready = loop.create_future()
        loop.add_reader(sock.fileno(), _wake, ready)
        try:
            await asyncio.wait_for(ready, left)
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(sock.fileno())


def _wake(ready: asyncio.Future) -> None:
    if not ready.done():
        ready.set_result(None)


async def classify(sock: socket.socket) -> str:
    """mongod's rule on its one port: ``GET `` is HTTP; a header whose responseTo is neither 0 nor -1 cannot be a
    client's first wire message, so it is a TLS ClientHello; anything else is a plain client."""
    head = await _peek(sock, HEADER, FIRST_BYTES_TIMEOUT)
    if head.startswith(b"GET "):
        return "http"
    if len(head) < HEADER:
        return "plain"  # too short to be TLS: the wire protocol reader will report what is wrong with it
    response_to = struct.unpack_from("<i", head, 8)[0]
    return "plain" if response_to in (0, -1) else "tls"


HTTP_REPLY = (b"HTTP/1.0 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 84\r\n\r\n"
              b"It looks like you are trying to access MongoDB over HTTP on the native driver port.\n")

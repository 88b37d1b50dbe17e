"""TLS as mongod does it (``net.tls.*`` / ``--tls*``): one port for TLS and plain clients, told apart by the first
wire header, and member-to-member connections encrypted in preferTLS and requireTLS.

* ``settings(flat)`` validates the options with mongod's startup messages (raises UsageError).
* ``server_context`` / ``client_context`` build the SSL contexts once, at startup.
* ``classify(sock)`` peeks at a new connection: ``"tls"``, ``"plain"`` or ``"http"``.
* ``cluster_identity(der)`` is the O/OU/DC set of a certificate's subject: two members whose sets are equal (and not
  empty) accept each other's certificate as a member login (``security.clusterAuthMode`` sendX509/x509).

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
# security.clusterAuthMode, in the only order mongod lets a running set move through them.
CLUSTER_AUTH_MODES = ("keyFile", "sendKeyFile", "sendX509", "x509")
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
    cluster_file: str | None = None
    cluster_auth_mode: str = "keyFile"

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    @property
    def sends_x509(self) -> bool:
        """This member logs in to its peers with its certificate rather than the keyFile."""
        return self.cluster_auth_mode in ("sendX509", "x509")

    @property
    def accepts_x509(self) -> bool:
        return self.cluster_auth_mode != "keyFile"

    @property
    def accepts_key_file(self) -> bool:
        return self.cluster_auth_mode != "x509"

    @property
    def outbound(self) -> bool:
        """Members connect to each other over TLS only in preferTLS and requireTLS (allowTLS sends plain)."""
        return self.mode in ("preferTLS", "requireTLS")


def settings(flat: dict) -> TlsSettings:
    """The TLS settings from dotted config keys (``net.tls.mode``…, ``security.clusterAuthMode``), checked in the
    order mongod checks them at startup: the options, then the cluster authentication mode, then the files."""
    mode = flat.get("net.tls.mode", "disabled")
    if mode not in MODES:
        raise TlsConfigError(f"BadValue: unsupported value for tlsMode {mode}")
    cluster_mode = flat.get("security.clusterAuthMode", "keyFile")
    if cluster_mode not in CLUSTER_AUTH_MODES:
        raise TlsConfigError(f"BadValue: unsupported value for clusterAuthMode {cluster_mode}; valid values are "
                             f"{', '.join(CLUSTER_AUTH_MODES)}")
    cert = flat.get("net.tls.certificateKeyFile")
    ca = flat.get("net.tls.CAFile")
    cluster_file = flat.get("net.tls.clusterFile")
    allow = flat.get("net.tls.allowConnectionsWithoutCertificates", False)
    if isinstance(allow, str):
        allow = allow.lower() in ("true", "1", "yes")
    if mode == "disabled" and (cert or ca or cluster_file or allow):
        raise TlsConfigError("BadValue: need to enable TLS via the sslMode/tlsMode flag when using TLS "
                             "configuration parameters")
    wanted = TlsSettings(cluster_auth_mode=cluster_mode)
    if wanted.accepts_x509 and mode == "disabled":
        raise TlsConfigError("BadValue: need to enable TLS via the tlsMode flag")
    if wanted.sends_x509 and mode == "allowTLS":
        # allowTLS sends plain to other members, so there is no certificate to present.
        raise TlsConfigError("BadValue: cannot have x.509 cluster authentication in allowTLS mode")
    if mode == "disabled":
        return wanted
    if not cert:
        raise TlsConfigError("BadValue: need tlsCertificateKeyFile or certificateSelector when TLS is enabled")
    if not ca:
        if wanted.accepts_x509:
            raise TlsConfigError("BadValue: No TLS certificate validation can be performed since no CA file has "
                                 "been provided; please specify an sslCAFile parameter")
        raise TlsConfigError("BadValue: The use of TLS without specifying a chain of trust is no longer supported")
    return TlsSettings(mode, str(cert), str(ca), bool(allow), str(cluster_file) if cluster_file else None,
                       cluster_mode)


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
    clusterFile, else certificateKeyFile, as the client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.load_verify_locations(tls.ca_file)
    ctx.load_cert_chain(tls.cluster_file or tls.certificate_key_file)
    return ctx


# DER object identifiers (tag, length and value) of the subject attributes mongod's membership rule compares.
_MEMBERSHIP_OIDS = {bytes.fromhex("060355040a"): "O", bytes.fromhex("060355040b"): "OU",
                    bytes.fromhex("060a0992268993f22c640119"): "DC"}


def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``pos``."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER element")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, content end) of each element inside a constructed one."""
    out = []
    while start < end:
        tag, cs, ce = _der(data, start)
        out.append((tag, start, cs, ce))
        start = ce
    return out


def cluster_identity(der: bytes) -> frozenset[tuple[str, str]]:
    """The (attribute, value) pairs of O, OU and DC in the subject of a DER certificate."""
    _tag, cs, _end = _der(der, 0)
    _tag, ts, te = _der(der, cs)  # tbsCertificate
    fields = _children(der, ts, te)
    if fields and fields[0][0] == 0xA0:  # explicit version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject
    _tag, _start, ss, se = fields[4]
    out = set()
    for _t, _s, rs, re_ in _children(der, ss, se):  # each RelativeDistinguishedName (a SET)
        for _t2, _s2, as_, ae in _children(der, rs, re_):  # AttributeTypeAndValue
            (_ot, os_, _ocs, oe), (_vt, _vs, vcs, vce) = _children(der, as_, ae)[:2]
            name = _MEMBERSHIP_OIDS.get(der[os_:oe])
            if name:
                out.add((name, der[vcs:vce].decode("utf-8", "replace")))
    return frozenset(out)


def certificate_file_identity(path: str) -> frozenset[tuple[str, str]]:
    """``cluster_identity`` of the first certificate in a PEM file (certificateKeyFile holds certificate and key)."""
    with open(path, encoding="ascii", errors="replace") as f:
        text = f.read()
    begin = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
    return cluster_identity(ssl.PEM_cert_to_DER_cert(text[begin:end]))


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

"""`stateserver-api`: run one API server. Settings come from a JSON config file and/or flags (flags win).

Secrets are never passed on the command line: the bearer token and the mongo password are read from files.
It serves HTTPS with the machine's certificate (SIGHUP re-reads the certificate and key); plain HTTP is an explicit
opt-out (--insecure-http, or "tls": false in the config).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import math
import signal
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx

from . import limits, logs, peers, tls
from .app import create_app
from .backend import REPLICA_SET, MongoBackend

log = logging.getLogger("stateserver_api")


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 17070
    mongo_seeds: list[str] = field(default_factory=list)
    replica_set: str = REPLICA_SET
    mongo_user: str = ""
    mongo_password_file: str = ""
    token_file: str = ""
    # A second token that opens /metrics only (Prometheus keeps it in its own configuration); empty: none.
    metrics_token_file: str = ""
    server_selection_timeout_ms: int = 3000
    wtimeout_ms: int = 5000
    log_level: str = "info"
    expose_openapi: bool = True
    # Seconds a client has to send a whole request (line, headers and body) once its connection is open or its
    # previous answer was sent; a slow or stalled client is disconnected after that.
    read_timeout: float = 10.0
    # Open client connections at most (0: the default, within the file descriptor limit); past it the connection
    # that has waited longest without completing a request is closed.
    max_connections: int = 0
    # HTTPS with the machine's certificate and key (PEM; the key 0600/0400). tls_ca_file is the deployment CA: it
    # verifies the other API servers this one probes and, with tls_require_client_cert, every client.
    tls: bool = True
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    tls_require_client_cert: bool = False
    # TLS towards mongod: on when a CA file is given; the certificate-key PEM is presented when mongod asks for one.
    mongo_tls_ca_file: str = ""
    mongo_tls_certificate_key_file: str = ""

    def seeds(self) -> list[str]:
        return self.mongo_seeds or [f"{self.host}:37017"]


LOG_LEVELS = ("debug", "info", "warning", "error")


# The JSON types each setting accepts (the field annotations, as strings under `from __future__ import annotations`).
_JSON_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
                                            "list[str]": (list,)}


def setting_problems(settings: Settings) -> list[str]:
    """What is wrong with the settings' types and ranges (a JSON config can hold anything)."""
    problems = []
    for f in fields(Settings):
        value, wanted = getattr(settings, f.name), _JSON_TYPES[str(f.type)]
        if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
            problems.append(f"{f.name} must be {f.type}, not {type(value).__name__}")
    if problems:
        return problems
    if not all(isinstance(seed, str) and seed for seed in settings.mongo_seeds):
        problems.append("mongo_seeds must be host:port strings")
    if not 1 <= settings.port <= 65535:
        problems.append(f"port must be between 1 and 65535, not {settings.port}")
    if not (math.isfinite(settings.read_timeout) and 0 < settings.read_timeout <= 300):
        problems.append(f"read_timeout must be more than 0 and at most 300 seconds, not {settings.read_timeout}")
    if settings.max_connections < 0:
        problems.append(f"max_connections must be 0 (the default) or more, not {settings.max_connections}")
    if settings.log_level not in LOG_LEVELS:
        problems.append(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {settings.log_level!r}")
    problems.extend(tls_problems(settings))
    bind_problem = bind_address_problem(settings.host)
    if bind_problem:
        problems.append(bind_problem)
    return problems


def tls_problems(settings: Settings) -> list[str]:
    """Which TLS settings are missing or contradict each other (the files themselves are checked at start)."""
    files = ("tls_cert_file", "tls_key_file", "tls_ca_file")
    problems = []
    if settings.tls:
        missing = [name for name in files if not getattr(settings, name)]
        if missing:
            problems.append(f"HTTPS needs {', '.join(missing)} (the machine's certificate and key and the deployment "
                            "CA); plain HTTP only with --insecure-http")
    else:
        given = [name for name in (*files, "tls_require_client_cert") if getattr(settings, name)]
        if given:
            problems.append(f"{', '.join(given)} given but TLS is off (--insecure-http or tls: false); drop them or "
                            "turn TLS on")
    if settings.mongo_tls_certificate_key_file and not settings.mongo_tls_ca_file:
        problems.append("mongo_tls_certificate_key_file needs mongo_tls_ca_file (the CA that signed mongod's "
                        "certificate)")
    return problems


def bind_address_problem(host: str) -> str | None:
    """Why the server must not listen on `host`, or None. The address is resolved as the listener would resolve it,
    so every spelling of the wildcard ("0", "0x0", "::0", "0:0:0:0:0:0:0:0", "::ffff:0.0.0.0", a name that
    resolves to one) is refused, not just "0.0.0.0" and "::"."""
    if not host.strip():
        return "host is empty; give this machine's own address (an empty host listens on every interface)"
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError) as exc:
        return f"host {host!r} does not resolve to an address ({exc})"
    for address in sorted(resolved):
        ip = ipaddress.ip_address(address.partition("%")[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if ip.is_unspecified or (mapped is not None and mapped.is_unspecified):
            return (f"host {host!r} is the wildcard address {ip}, which listens on every interface; give this "
                    "machine's own address (the one its machine record publishes as api_address)")
    return None


def read_secret(path: str, what: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SystemExit(f"stateserver-api: cannot read the {what} file {path}: {exc.strerror}") from exc
    if not value:
        raise SystemExit(f"stateserver-api: the {what} file {path} is empty")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stateserver-api", description=__doc__)
    parser.add_argument("--config", help="JSON file with any of the settings below (keys with underscores)")
    parser.add_argument("--host", help="address to listen on: the machine's own address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 17070)")
    parser.add_argument("--mongo-seeds", help="comma-separated host:port seeds of the replica set "
                        "(default HOST:37017; the rest are discovered)")
    parser.add_argument("--replica-set", help="replica set name (default stateserver)")
    parser.add_argument("--mongo-user", help="user to authenticate as (authSource admin); empty = no auth")
    parser.add_argument("--mongo-password-file", help="file holding the mongo password")
    parser.add_argument("--token-file", help="file holding the deployment's bearer token (required)")
    parser.add_argument("--metrics-token-file", help="file holding a token that opens /metrics only (optional; the "
                        "bearer token opens it too)")
    parser.add_argument("--server-selection-timeout-ms", type=int)
    parser.add_argument("--wtimeout-ms", type=int)
    parser.add_argument("--log-level", choices=LOG_LEVELS)
    parser.add_argument("--read-timeout", type=float, help="seconds a client has to send a whole request (10)")
    parser.add_argument("--max-connections", type=int, help="open client connections at most (default 4096, "
                        "within the file descriptor limit)")
    parser.add_argument("--tls-cert-file", help="PEM certificate (and chain) this server presents; its subject "
                        "alternative names must hold the address clients dial")
    parser.add_argument("--tls-key-file", help="PEM private key of the certificate (mode 0600 or 0400)")
    parser.add_argument("--tls-ca-file", help="the deployment CA: verifies the other API servers (and clients with "
                        "--tls-require-client-cert)")
    parser.add_argument("--tls-require-client-cert", action="store_true", default=None,
                        help="accept only clients presenting a certificate signed by --tls-ca-file")
    parser.add_argument("--insecure-http", action="store_true",
                        help="serve plain HTTP (tokens and data cross the network in clear text): an explicit opt-out")
    parser.add_argument("--mongo-tls-ca-file", help="CA that signed mongod's certificates; turns TLS to mongod on")
    parser.add_argument("--mongo-tls-certificate-key-file", help="PEM certificate and key presented to mongod")
    parser.add_argument("--check-config", action="store_true",
                        help="check the settings, the bind address and the secret files, then exit (0 when usable)")
    parser.add_argument("--wait-live", type=float, metavar="SECONDS",
                        help="wait until the server of these settings answers /v1/live, then exit (0) or give up "
                        "after SECONDS (1); the systemd unit runs this after starting it, so a restart completes "
                        "only once the server answers")
    return parser


def load_settings(argv: list[str] | None = None) -> Settings:
    parser = _parser()
    return _settings(parser, parser.parse_args(argv))


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Settings:
    settings = Settings()
    if args.config:
        try:
            data: dict[str, Any] = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            parser.error(f"cannot read config {args.config}: {exc}")
        if not isinstance(data, dict):
            parser.error(f"{args.config} must hold a JSON object of settings, not {type(data).__name__}")
        known = {f.name for f in fields(Settings)}
        unknown = sorted(set(data) - known)
        if unknown:
            parser.error(f"unknown settings in {args.config}: {', '.join(unknown)}")
        for name, value in data.items():
            setattr(settings, name, value)
    for name in ("host", "port", "replica_set", "mongo_user", "mongo_password_file", "token_file", "metrics_token_file",
                 "server_selection_timeout_ms", "wtimeout_ms", "log_level", "read_timeout", "max_connections",
                 "tls_cert_file", "tls_key_file", "tls_ca_file", "tls_require_client_cert", "mongo_tls_ca_file",
                 "mongo_tls_certificate_key_file"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if args.insecure_http:
        settings.tls = False
    if args.mongo_seeds:
        settings.mongo_seeds = [s.strip() for s in args.mongo_seeds.split(",") if s.strip()]
    if not settings.token_file:
        parser.error("--token-file (or token_file in --config) is required")
    if settings.mongo_user and not settings.mongo_password_file:
        parser.error("--mongo-user needs --mongo-password-file")
    problems = setting_problems(settings)
    if problems:
        parser.error("; ".join(problems))
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    settings = _settings(parser, args)
    if args.wait_live is not None:
        return wait_until_live(settings, args.wait_live)
    token = read_secret(settings.token_file, "bearer token")
    password = read_secret(settings.mongo_password_file, "mongo password") if settings.mongo_user else None
    scrape = read_secret(settings.metrics_token_file, "metrics token") if settings.metrics_token_file else None
    if scrape is not None and scrape == token:
        raise SystemExit(f"stateserver-api: the metrics token file {settings.metrics_token_file} holds the bearer "
                         "token; give Prometheus a token of its own (it opens /metrics only)")
    served = None
    if settings.tls:
        try:
            served = tls.ServedCertificate(settings.tls_cert_file, settings.tls_key_file,
                                           settings.tls_ca_file if settings.tls_require_client_cert else None)
            peer_context(settings)
        except (tls.TLSFilesError, OSError, ssl.SSLError) as exc:
            raise SystemExit(f"stateserver-api: {exc}") from exc
    if args.check_config:
        print(f"stateserver-api: the settings are usable; it would listen on {settings.host}:{settings.port} "
              f"({'HTTPS' if served else 'plain HTTP'})")
        return 0
    logs.configure(settings.log_level)
    if served is None:
        log.warning("serving plain HTTP", extra={"event": "insecure-http", "reason": "TLS is turned off: the bearer "
                                                 "token and every value cross the network in clear text"})
    mongo_tls = ({"tls": True, "tlsCAFile": settings.mongo_tls_ca_file} if settings.mongo_tls_ca_file else {})
    if settings.mongo_tls_certificate_key_file:
        mongo_tls["tlsCertificateKeyFile"] = settings.mongo_tls_certificate_key_file
    backend = MongoBackend(
        settings.seeds(), settings.replica_set, settings.mongo_user or None, password,
        server_selection_timeout_ms=settings.server_selection_timeout_ms, wtimeout_ms=settings.wtimeout_ms,
        tls_options=mongo_tls,
    )

    def probe(addresses: list[str]) -> dict[str, bool]:
        try:
            context = peer_context(settings)
        except (OSError, ssl.SSLError) as exc:
            log.error("cannot probe the other API servers", extra={"reason": str(exc)})
            return dict.fromkeys(addresses, False)
        return peers.probe(addresses, tls=context)

    app = create_app(backend, token, expose_docs=settings.expose_openapi, scrape_token=scrape, probe=probe,
                     certificate=served)
    # systemctl reload (and rotate-certificates.yml) send SIGHUP: new connections get the re-read certificate.
    signal.signal(signal.SIGHUP, lambda *_: served.reload() if served else log.warning(
        "nothing to reload", extra={"event": "tls-reload", "reason": "TLS is off"}))
    budget = limits.connection_budget(settings.max_connections)
    log.info("starting", extra={"address": f"{settings.host}:{settings.port}", "event": "start",
                                "reason": f"{'HTTPS' if served else 'plain HTTP'}, at most {budget.max_connections} "
                                          f"connections, {settings.read_timeout}s to send a request"})
    try:
        serve(app, settings.host, settings.port, budget, settings.read_timeout,
              served.listener if served else None)
    finally:
        backend.close()
    return 0


def peer_context(settings: Settings) -> ssl.SSLContext | None:
    """How this server talks to API servers (the other machines', and its own for --wait-live): verifying the
    deployment CA, presenting its own certificate when they require one. None when TLS is off."""
    if not settings.tls:
        return None
    mutual = settings.tls_require_client_cert
    return tls.client_context(settings.tls_ca_file, settings.tls_cert_file if mutual else None,
                              settings.tls_key_file if mutual else None)


def wait_until_live(settings: Settings, seconds: float) -> int:
    host = settings.host
    context = peer_context(settings)
    url = f"{'https' if context else 'http'}://{f'[{host}]' if ':' in host else host}:{settings.port}/v1/live"
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2, trust_env=False, verify=context or True).status_code == 200:
                return 0
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            print(f"stateserver-api: {url} did not answer within {seconds:g}s", file=sys.stderr)
            return 1
        time.sleep(0.2)


def serve(app: Any, host: str, port: int, budget: limits.Budget, read_timeout: float,
          context: ssl.SSLContext | None = None) -> None:
    """Run the app under uvicorn with the limits of `limits`: one h11 protocol with a request deadline and a
    connection cap, bounded headers, a short keep-alive, and no protocol upgrades (the API has no websockets).
    With `context` the socket speaks TLS only: a plain HTTP request fails the handshake and is closed unanswered."""
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, http=limits.guarded_protocol(budget.max_connections, read_timeout),
        backlog=budget.backlog, ws="none", h11_max_incomplete_event_size=limits.MAX_HEADER_BYTES,
        timeout_keep_alive=limits.KEEP_ALIVE_SECONDS, lifespan="off", log_config=None, access_log=False,
        server_header=False, timeout_graceful_shutdown=5,
        loop="asyncio")  # HandshakeDeadlineServer shadows a method of asyncio's own loop
    config.load()
    # uvicorn would build its own context from file names; ours is the one whose certificate SIGHUP replaces.
    config.ssl = context
    limits.HandshakeDeadlineServer(config, read_timeout if context else None).run()


if __name__ == "__main__":
    sys.exit(main())

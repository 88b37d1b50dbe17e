"""`stateserver-api`: run one API server. Settings come from a JSON config file and/or flags (flags win).

Secrets are never passed on the command line: the bearer token and the mongo password are read from files.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import logs
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
    server_selection_timeout_ms: int = 3000
    wtimeout_ms: int = 5000
    log_level: str = "info"
    expose_openapi: bool = True

    def seeds(self) -> list[str]:
        return self.mongo_seeds or [f"{self.host}:37017"]


def read_secret(path: str, what: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SystemExit(f"stateserver-api: cannot read the {what} file {path}: {exc.strerror}") from exc
    if not value:
        raise SystemExit(f"stateserver-api: the {what} file {path} is empty")
    return value


def load_settings(argv: list[str] | None = None) -> Settings:
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
    parser.add_argument("--server-selection-timeout-ms", type=int)
    parser.add_argument("--wtimeout-ms", type=int)
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)

    settings = Settings()
    if args.config:
        try:
            data: dict[str, Any] = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            parser.error(f"cannot read config {args.config}: {exc}")
        known = {f.name for f in fields(Settings)}
        unknown = sorted(set(data) - known)
        if unknown:
            parser.error(f"unknown settings in {args.config}: {', '.join(unknown)}")
        for name, value in data.items():
            setattr(settings, name, value)
    for name in ("host", "port", "replica_set", "mongo_user", "mongo_password_file", "token_file",
                 "server_selection_timeout_ms", "wtimeout_ms", "log_level"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if args.mongo_seeds:
        settings.mongo_seeds = [s.strip() for s in args.mongo_seeds.split(",") if s.strip()]
    if not settings.token_file:
        parser.error("--token-file (or token_file in --config) is required")
    if settings.mongo_user and not settings.mongo_password_file:
        parser.error("--mongo-user needs --mongo-password-file")
    return settings


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    settings = load_settings(argv)
    logs.configure(settings.log_level)
    token = read_secret(settings.token_file, "bearer token")
    password = read_secret(settings.mongo_password_file, "mongo password") if settings.mongo_user else None
    backend = MongoBackend(
        settings.seeds(), settings.replica_set, settings.mongo_user or None, password,
        server_selection_timeout_ms=settings.server_selection_timeout_ms, wtimeout_ms=settings.wtimeout_ms,
    )
    app = create_app(backend, token, expose_docs=settings.expose_openapi)
    log.info("starting", extra={"address": f"{settings.host}:{settings.port}", "event": "start"})
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                    server_header=False, timeout_graceful_shutdown=5)
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

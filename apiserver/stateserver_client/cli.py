"""`stateserver-client`: the unit's command line. Prints JSON; exits 0 on success, 1 on an API error,
2 on bad usage, 3 when no API server could be reached."""

from __future__ import annotations

import argparse
import json
import logging
import ssl
import sys
from typing import Any

from .client import ClientConfig, ClientError, StateClient, Unavailable

DEFAULT_CONFIG = "/etc/stateserver-client/config.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stateserver-client", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"client config (default {DEFAULT_CONFIG})")
    parser.add_argument("--ca-file", help="the deployment CA that signed the API servers' certificates (overrides "
                        "ca_file in the config)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ready", help="check that an API server can reach a writable primary")
    sub.add_parser("status", help="HA status: every state machine, its vote and member state")
    sub.add_parser("addresses", help="refresh the API address list from the published one and print it")
    sub.add_parser("register", help="register a unit").add_argument("unit")
    sub.add_parser("heartbeat", help="heartbeat a registered unit").add_argument("unit")
    sub.add_parser("get", help="read a key").add_argument("key")
    put = sub.add_parser("put", help="write a key at a known version (0 creates it)")
    put.add_argument("key")
    put.add_argument("value", help="a JSON value")
    put.add_argument("--version", type=int, required=True)
    put.add_argument("--request-id", help="idempotency key (default: a new random one)")
    return parser


def run(args: argparse.Namespace, client: StateClient) -> Any:
    if args.command == "ready":
        return client.ready()
    if args.command == "status":
        return client.ha_status()
    if args.command == "addresses":
        return {"addresses": client.refresh_addresses()}
    if args.command == "register":
        return client.register(args.unit)
    if args.command == "heartbeat":
        return client.heartbeat(args.unit)
    if args.command == "get":
        return client.get(args.key)
    return client.put(args.key, json.loads(args.value), args.version, args.request_id)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "put":
        try:
            json.loads(args.value)
        except ValueError as exc:
            parser.error(f"value is not JSON: {exc}")
    # The client's warnings (an address cache it cannot write) go to stderr as one plain line each.
    logging.basicConfig(format="stateserver-client: %(message)s", level=logging.WARNING, stream=sys.stderr)
    try:
        config = ClientConfig.load(args.config, ca_file=args.ca_file)
        client = StateClient.from_config(config)
    except (OSError, ValueError, TypeError, ssl.SSLError) as exc:
        print(f"stateserver-client: cannot load {args.config}: {exc}", file=sys.stderr)
        return 2
    with client:
        try:
            result = run(args, client)
        except ValueError as exc:  # a key or unit name the API would refuse, or a value that is not JSON
            print(f"stateserver-client: {exc}", file=sys.stderr)
            return 2
        except ClientError as exc:
            print(json.dumps({"error": exc.detail, "status": exc.status}), file=sys.stderr)
            return 1
        except Unavailable as exc:
            print(json.dumps({"error": str(exc)}), file=sys.stderr)
            return 3
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

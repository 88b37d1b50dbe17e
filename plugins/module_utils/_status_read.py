# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Reading the status rows from a live set: the replica set as ReplSet reads it, every API server's GET /v1/live
and, with TLS, when the certificates served at each address expire. ha_status_info returns it, and peergroup
returns the same after it converges (one module process fewer for a playbook that converges and then reports).
The join and the table are _status.py's (pure); this file does the I/O around them.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection, HTTPException, HTTPSConnection

from ansible_collections.stateserver.ha.plugins.module_utils._converge import (
    member_summary,
    primary_host,
    record_dicts,
    voter_names,
)
from ansible_collections.stateserver.ha.plugins.module_utils._model import RECOVERING
from ansible_collections.stateserver.ha.plugins.module_utils._peergroup import convergence_report
from ansible_collections.stateserver.ha.plugins.module_utils._records import parse_pool, parse_record_docs
from ansible_collections.stateserver.ha.plugins.module_utils._replset import PROBE_CONNECT_TIMEOUT, NoSeedAnswered
from ansible_collections.stateserver.ha.plugins.module_utils._status import (
    certificate_expiry,
    status_rows,
    status_table,
    with_certificates,
)

try:
    from cryptography import x509

    HAS_CRYPTOGRAPHY = True
except ImportError:
    HAS_CRYPTOGRAPHY = False

# The options that say what to report, beside the connection's: ha_status_info takes them at the top level,
# peergroup under its `status` option.
STATUS_OPTIONS = {
    "pool": {"type": "list", "elements": "dict", "default": [], "options": {
        "name": {"type": "str", "required": True},
        "mongo_address": {"type": "str"},
        "address": {"type": "str"},
        "api_address": {"type": "str"},
        "reachable": {"type": "bool"},
    }},
    "probe_api": {"type": "bool", "default": True},
    "api_timeout": {"type": "float", "default": 1.0},
    "api_scheme": {"type": "str", "default": "http", "choices": ["http", "https"]},
    "api_ca_file": {"type": "path"},
    "certificate_warning_days": {"type": "int", "default": 30},
}


def check_status_options(options: dict, port: int) -> tuple[list, str | None]:
    """(the pool's hosts, what is wrong with the options or None), before anything is read or changed."""
    hosts, problems = parse_pool(options["pool"], port)
    if problems:
        return [], "the pool is not valid: " + "; ".join(problems)
    timeout = options["api_timeout"]
    if not timeout > 0 or timeout == float("inf"):
        return [], f"api_timeout must be a number of seconds above 0, got {timeout}"
    if options["certificate_warning_days"] < 0:
        return [], f"certificate_warning_days must be 0 or more days, got {options['certificate_warning_days']}"
    if options["probe_api"] and options["api_scheme"] == "https" and options["api_ca_file"]:
        try:
            ssl.create_default_context(cafile=options["api_ca_file"])
        except (OSError, ssl.SSLError) as exc:
            return [], (f"api_ca_file {options['api_ca_file']} is not a readable PEM CA certificate ({exc}); give "
                        "the deployment CA (stateserver-secrets/ca.crt)")
    return hosts, None


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


def _not_after(der: bytes | None) -> datetime.datetime | None:
    if not der or not HAS_CRYPTOGRAPHY:
        return None
    try:
        return x509.load_der_x509_certificate(der).not_valid_after_utc
    except ValueError:
        return None


def reading_context(certificate_key_file: str | None, password: str | None) -> ssl.SSLContext:
    """A client context that completes a handshake whatever the server presents: only to read when the served
    certificate expires (an expired one would not verify), never to send anything over it. It presents the
    module's client certificate, for a mongod that asks for one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if certificate_key_file:
        context.load_cert_chain(certificate_key_file, password=password)
    return context


def served_not_after(address: str, context: ssl.SSLContext, connect_timeout: float,
                     timeout: float) -> datetime.datetime | None:
    """notAfter of the certificate served at address (host:port) from one handshake; None when none completes."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=connect_timeout) as raw:
            raw.settimeout(timeout)
            with context.wrap_socket(raw, server_hostname=host) as tls:
                return _not_after(tls.getpeercert(binary_form=True))
    except (OSError, ValueError):
        return None


def probe_api(address: str, scheme: str, timeout: float, verified: ssl.SSLContext | None,
              reading: ssl.SSLContext) -> tuple[bool, datetime.datetime | None]:
    """(whether GET /v1/live answered 200 with {"status": "ok"}, notAfter of the certificate served over HTTPS)."""
    host, port = _host_port(address)
    https = scheme == "https"
    conn = HTTPSConnection(host, port, timeout=timeout, context=verified) if https else \
        HTTPConnection(host, port, timeout=timeout)
    not_after = None
    try:
        conn.connect()
        if https:
            not_after = _not_after(conn.sock.getpeercert(binary_form=True))
        conn.request("GET", "/v1/live")
        response = conn.getresponse()
        body = json.loads(response.read())
    except ssl.SSLCertVerificationError:
        # Not an answer from a server we trust, but when the certificate it serves ends (expired, say) is news.
        return False, served_not_after(address, reading, timeout, timeout)
    except (OSError, HTTPException, ValueError):
        # Refused, timed out, a broken answer or not JSON.
        return False, not_after
    finally:
        conn.close()
    return response.status == 200 and isinstance(body, dict) and body.get("status") == "ok", not_after


def probe(api_addresses: list[str], mongo_addresses: list[str], options: dict, selection_timeout: float,
          reading: ssl.SSLContext | None) -> tuple[dict, dict]:
    """Every API server's probe and every mongod's handshake at once: ({api address: answered},
    {address: notAfter of the certificate served there, for those read})."""
    verified = None
    if options["api_scheme"] == "https":
        verified = ssl.create_default_context(cafile=options["api_ca_file"])
    # The connect gets a second, as the seeds' probe gives it (a machine that is off never answers one); the
    # handshake then gets what pymongo gives a member to answer.
    connect = min(PROBE_CONNECT_TIMEOUT, selection_timeout)
    jobs = [(lambda a=a: probe_api(a, options["api_scheme"], options["api_timeout"], verified, reading))
            for a in api_addresses]
    jobs += [(lambda a=a: (None, served_not_after(a, reading, connect, selection_timeout)))
             for a in mongo_addresses]
    if not jobs:
        return {}, {}
    with ThreadPoolExecutor(max_workers=min(len(jobs), 16)) as pool:
        results = list(pool.map(lambda job: job(), jobs))
    answers = {address: answered for address, (answered, _not_after) in zip(api_addresses, results)}
    served = {address: not_after for address, (_answered, not_after) in zip([*api_addresses, *mongo_addresses], results)
              if not_after is not None}
    return answers, served


def read_status(rs, params: dict, options: dict, hosts: list, warn) -> dict:
    """The status result (rows, table, records, members, primary, voters, convergence) read through rs, an open
    ReplSet. params are the connection's (tls, client certificate, server_selection_timeout), options the
    STATUS_OPTIONS, hosts the pool as check_status_options parsed it; warn(text) reports what is left out.
    Raises ReplSetError when the set answers but cannot be read."""
    pool = [{"name": h.name, "mongo_address": h.mongo_address, "api_address": h.api_address} for h in hosts]
    answered, config, status, records, problems, stale = True, None, None, [], [], frozenset()
    try:
        view = rs.read_view()
    except NoSeedAnswered:
        answered = False
    else:
        config, status = view.config, view.status
        records, problems = parse_record_docs(rs.read_record_docs())
        recovering = [m["name"] for m in (status or {}).get("members", [])
                      if m.get("state") == RECOVERING and m.get("health") == 1]
        stale = rs.too_stale(recovering)

    if config is None:
        converged, reasons = False, ["no seed answered" if not answered else "the replica set is not initiated"]
    else:
        converged, reasons = convergence_report(view, records)
        reasons = [*problems, *reasons]
        converged = converged and not problems
    rows = status_rows(records, config, status, pool, stale)
    api_addresses, mongo_addresses = [], []
    if options["probe_api"]:
        api_addresses = sorted({r.api_address for r in records} | {h.api_address for h in hosts})
    if params["tls"]:
        mongo_addresses = sorted({row.address for row in rows if row.address} - set(api_addresses))
    tls_used = params["tls"] or (options["probe_api"] and options["api_scheme"] == "https")
    if tls_used and not HAS_CRYPTOGRAPHY:
        warn("cryptography is not installed where the module runs: the certificates' expiry is not reported")
    reading = None
    if tls_used:
        try:
            reading = reading_context(params["tls_certificate_key_file"], params["tls_certificate_key_file_password"])
        except (OSError, ssl.SSLError) as exc:
            # pymongo has just used the same file; should it fail here, report the rest without mongod's client.
            warn(f"tls_certificate_key_file not presented when reading certificates: {exc}")
            reading = reading_context(None, None)
    answers, served = probe(api_addresses, mongo_addresses, options, params["server_selection_timeout"], reading)
    rows = status_rows(records, config, status, pool, stale, answers if options["probe_api"] else None)
    if served:
        now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 (targets may run 3.8+)
        rows = with_certificates(rows, {a: certificate_expiry(t, now, options["certificate_warning_days"])
                                        for a, t in served.items()})
    return {
        "answered": answered,
        "initiated": config is not None,
        # Without TLS, rows are as they always were: no certificate keys at all.
        "rows": [{**row.as_dict(), **(row.certificate_dict() if tls_used else {})} for row in rows],
        "table": status_table(rows),
        "records": record_dicts(records),
        "record_problems": list(problems),
        "members": member_summary(config, status),
        "primary": primary_host(status),
        "voters": voter_names(config),
        "config_version": int((config or {}).get("version", 0)),
        "converged": converged,
        "not_converged": list(reasons),
    }

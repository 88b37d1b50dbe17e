"""The unit's client: picks an API server the way the design says and survives losing one.

- The first address is chosen at random (a seedable RNG); the address that worked is stored in a cache file (write a
  temporary file, then rename) and is tried first next time.
- The other addresses are dialled in parallel with a 50 ms stagger, so a dead address costs no full timeout.
- The address list is refreshed from the API's published addresses (the state-machine records); once the API has
  published a list it replaces the configured one, so a retired machine drops out of the dial list.
- A write carries a request id that stays the same across retries, so the server applies it once.
- HTTPS verifying the deployment CA (ca_file): a server whose certificate that CA did not sign, or whose names do not
  include the address dialled, loses the race like a server that is down, and the refusal is logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import ssl
import tempfile
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx

from .dial import DIAL_STAGGER, DialError, dedupe, dial_first, dial_order, is_address

log = logging.getLogger("stateserver_client")

# The server's pattern for keys and unit names (stateserver_api.app.KEY_PATTERN; a test keeps the two equal).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
TOKEN_PATTERN = re.compile(r"[!-~]+")


class ClientError(Exception):
    """The API answered with a client error (4xx other than 409); retrying will not help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class VersionConflict(ClientError):
    """409: the key is at another version (current_version), or its stored entry is unreadable (current_version is
    then the version a PUT may replace it at, or None when an operator has to repair it; detail says which)."""

    def __init__(self, detail: str, current_version: int | None) -> None:
        super().__init__(409, detail)
        self.current_version = current_version


class Unavailable(Exception):
    """No API server could complete the request before the deadline."""


class BadName(ValueError):
    """A key or unit name the API would refuse; refused here before anything is sent, so a name can never be read
    as a path ("../ready") or a query ("a?x=1")."""


class _NotTheApi(Exception):
    """A server answered with something that is not the API's JSON (a proxy's HTML page, say): try another."""


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ClientConfig:
    addresses: list[str]
    token_file: str
    cache_file: str | None = None
    stagger: float = DIAL_STAGGER
    request_timeout: float = 15.0
    retry_for: float = 60.0
    # The deployment CA that signed the API servers' certificates; required unless insecure_http opts out of TLS.
    ca_file: str | None = None
    # This unit's certificate and key, for API servers that require client certificates.
    cert_file: str | None = None
    key_file: str | None = None
    insecure_http: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and value):
                problems.append(f"{name} must be a file path or null")
        if not isinstance(self.insecure_http, bool):
            problems.append("insecure_http must be true or false")
        elif self.insecure_http and (self.ca_file or self.cert_file or self.key_file):
            problems.append("insecure_http is true but ca_file, cert_file or key_file is set; drop one or the other")
        elif not self.insecure_http and not self.ca_file:
            problems.append("ca_file must name the deployment CA's certificate (the API servers speak HTTPS); "
                            "plain HTTP only with insecure_http: true")
        if bool(self.cert_file) != bool(self.key_file):
            problems.append("cert_file and key_file go together")
        if not (isinstance(self.addresses, list) and self.addresses and all(is_address(a) for a in self.addresses)):
            problems.append("addresses must be a non-empty list of host:port strings (port 1-65535, IPv6 in [])")
        if not (isinstance(self.token_file, str) and self.token_file):
            problems.append("token_file must be the path of the file holding the token")
        if self.cache_file is not None and not (isinstance(self.cache_file, str) and self.cache_file):
            problems.append("cache_file must be a file path or null")
        elif self.cache_file is not None and Path(self.cache_file).is_dir():
            problems.append(f"cache_file {self.cache_file} is a directory; name a file in it, e.g. "
                            f"{Path(self.cache_file) / 'addresses.json'}")
        for name, low in (("stagger", 0.0), ("request_timeout", 0.001), ("retry_for", 0.0)):
            value = getattr(self, name)
            if not (_number(value) and low <= value <= 3600):
                problems.append(f"{name} must be a number of seconds from {low:g} to 3600, not {value!r:.40}")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def load(cls, path: str | os.PathLike[str], ca_file: str | None = None) -> ClientConfig:
        """The settings in `path`; ca_file (the command line's --ca-file) replaces the file's."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError(f"{path} must hold a JSON object of settings, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown settings in {path}: {', '.join(unknown)}")
        missing = sorted(f.name for f in fields(cls) if f.name not in data and f.name in ("addresses", "token_file"))
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}")
        if ca_file:
            data["ca_file"] = ca_file
        try:
            return cls(**data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def tls_context(self) -> ssl.SSLContext | None:
        """The context that trusts only the deployment CA (None with insecure_http)."""
        if self.insecure_http:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def read_token(self) -> str:
        token = Path(self.token_file).read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"the token file {self.token_file} is empty; it must hold the deployment's API token")
        return token


@dataclass
class AddressCache:
    """What the client remembers between runs: the address that worked last, and the last published list."""

    path: Path | None
    last_address: str | None = None
    published: list[str] = field(default_factory=list)
    unwritable: bool = False

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None) -> AddressCache:
        if path is None:
            return cls(None)
        cache = cls(Path(path))
        try:
            data = json.loads(cache.path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
        except (OSError, ValueError):
            return cache  # a missing or torn cache only costs the sticky preference
        if not isinstance(data, dict):
            return cache  # so does one holding anything else
        if is_address(data.get("last_address")):
            cache.last_address = data["last_address"]
        if isinstance(data.get("published"), list):
            cache.published = [a for a in data["published"] if is_address(a)]
        return cache

    def save(self) -> None:
        """Write the cache atomically. A cache that cannot be written (unwritable directory, full disk) is reported
        once and otherwise ignored: it only holds a preference, and the request at hand has already succeeded."""
        if self.path is None:
            return
        payload = json.dumps({"last_address": self.last_address, "published": self.published}, indent=1)
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Temp file in the same directory + rename: readers see the old or the new cache, never half of one.
            fd, tmp = tempfile.mkstemp(prefix=".addr-cache-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if not self.unwritable:
                log.warning("cannot write the address cache %s (%s); carrying on without remembering which API "
                            "server answered", self.path, exc.strerror or exc)
            self.unwritable = True


class StateClient:
    """Talks to whichever API server answers; thread-safe enough for one caller at a time."""

    def __init__(self, addresses: list[str], token: str, cache_file: str | os.PathLike[str] | None = None,
                 rng: random.Random | None = None, stagger: float = DIAL_STAGGER, request_timeout: float = 15.0,
                 retry_for: float = 60.0, transport: httpx.BaseTransport | None = None,
                 auto_refresh: bool = True, tls: ssl.SSLContext | None = None) -> None:
        """tls: the context that verifies the API servers (ClientConfig.tls_context); None speaks plain HTTP."""
        if not TOKEN_PATTERN.fullmatch(token):
            raise ValueError("the token must be printable ASCII without spaces (check the token file)")
        self.configured = dedupe(addresses)
        self.cache = AddressCache.load(cache_file)
        self.rng = rng or random.Random()
        self.stagger = stagger
        self.retry_for = retry_for
        self.current: str | None = None
        self.auto_refresh = auto_refresh
        # Set by each new connection, cleared by a refresh that got an answer: a failed refresh is retried after the
        # next request that succeeds, since a sticky connection may not be replaced for a long time.
        self._refresh_pending = False
        self.refused_token = False  # set when a server answered 401: retrying elsewhere will not help
        self.scheme = "https" if tls else "http"
        self.http = httpx.Client(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(request_timeout, connect=min(3.0, request_timeout)),
            transport=transport,
            verify=tls or True,
        )

    @classmethod
    def from_config(cls, config: ClientConfig, rng: random.Random | None = None) -> StateClient:
        return cls(config.addresses, config.read_token(), config.cache_file, rng=rng, stagger=config.stagger,
                   request_timeout=config.request_timeout, retry_for=config.retry_for, tls=config.tls_context())

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def addresses(self) -> list[str]:
        """The dial list: the published addresses once the API has published any, else the configured ones. The
        records are the truth about which machines serve the API, so a retired machine's address is dropped even
        when the unit was configured with it (as Juju's agent rewrites its configured addresses)."""
        return dedupe(self.cache.published or self.configured)

    def order(self) -> list[str]:
        return dial_order(self.addresses(), self.cache.last_address, self.rng)

    def _probe(self, address: str, need_primary: bool = True) -> str:
        # Ready (authenticated) rather than live: the winner must be able to reach a writable primary. Status
        # reads settle for a server that answers at all (503 = up, but no primary), since that is when they matter.
        try:
            response = self.http.get(f"{self.scheme}://{address}/v1/ready")
        except httpx.ConnectError as exc:
            refusal = _certificate_refusal(exc)
            if refusal is None:
                raise
            # Counted as down (the next address wins and becomes the remembered one), but said out loud: it is a
            # botched renewal, a wrong CA file, or someone else answering on that address.
            message = (f"{address} presented a certificate that is not accepted: {refusal}; check that the CA file "
                       "is the deployment's CA and that this address is among the certificate's names")
            log.warning("%s", message)
            raise Unavailable(message) from exc
        if response.status_code == 401:
            self.refused_token = True
        if response.status_code != 200 and (need_primary or response.status_code != 503):
            raise Unavailable(f"{address} answered {response.status_code}: {_detail(response)}")
        _api_json(response)  # an answer from something else on that port does not win the race
        return address

    def connect(self, need_primary: bool = True) -> str:
        """Dial in order (sticky first, others staggered) and remember the winner atomically."""
        def probe(address: str) -> str:
            return self._probe(address, need_primary)

        timeout = self.http.timeout.read or 15.0
        try:
            address, _ = dial_first(self.order(), probe, self.stagger, timeout=timeout)
        except DialError:
            # A last resort, not part of the dial list: a unit whose cached list went stale while every machine on it
            # was replaced still reaches the API through addresses its operator has since configured.
            unlisted = [a for a in self.configured if a not in self.addresses()]
            if not unlisted or self.refused_token:
                raise
            address, _ = dial_first(dial_order(unlisted, None, self.rng), probe, self.stagger, timeout=timeout)
        self.current = address
        if self.cache.last_address != address:
            self.cache.last_address = address
            self.cache.save()
        if self.auto_refresh:
            self._refresh_pending = True
            self._refresh_from(address)
        return address

    def _refresh_from(self, address: str) -> None:
        # Best effort, like Juju's login: the server we just reached tells us the current list. A failure leaves
        # the refresh pending, to be tried again after the next request that succeeds.
        try:
            response = self.http.get(f"{self.scheme}://{address}/v1/api-addresses")
            published = response.json().get("addresses") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return
        if published is not None:
            self._refresh_pending = False
        self._store_published(published)

    def _store_published(self, published: object) -> None:
        if isinstance(published, list) and published and all(is_address(a) for a in published) \
                and published != self.cache.published:
            self.cache.published = list(published)
            self.cache.save()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                need_primary: bool = True) -> dict[str, Any]:
        """Send one request, reconnecting and retrying (same body, so the same request id) until it gets an
        answer that is not "unavailable", or retry_for seconds pass."""
        try:
            content = None if body is None else json.dumps(body, allow_nan=False).encode()
        except ValueError as exc:
            raise ValueError(f"the value cannot be sent as JSON: {exc}") from exc
        headers = {"Content-Type": "application/json"} if body is not None else None
        deadline = time.monotonic() + self.retry_for
        delay, last_error = 0.05, "no attempt made"
        while True:
            try:
                address = self.current or self.connect(need_primary)
                response = self.http.request(method, f"{self.scheme}://{address}{path}", content=content,
                                             headers=headers)
                if response.status_code < 500:
                    if self._refresh_pending:
                        self._refresh_from(address)
                    return _result(response)
                last_error = f"HTTP {response.status_code}: {_detail(response)}"
            except (httpx.HTTPError, DialError, Unavailable, _NotTheApi) as exc:
                if self.refused_token:
                    raise ClientError(401, "an API server refused the token; check token_file") from exc
                last_error = f"{type(exc).__name__}: {exc}"
            self.current = None
            if time.monotonic() + delay > deadline:
                raise Unavailable(f"{method} {path} did not succeed within {self.retry_for}s: {last_error}")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def refresh_addresses(self) -> list[str]:
        """Fetch the published API addresses; an empty list keeps the previous one (as Juju's updater does)."""
        self._store_published(self.request("GET", "/v1/api-addresses").get("addresses"))
        return self.addresses()

    # The state API for units.
    def ready(self) -> dict[str, Any]:
        return self.request("GET", "/v1/ready")

    def ha_status(self) -> dict[str, Any]:
        return self.request("GET", "/v1/ha-status", need_primary=False)

    def register(self, unit: str) -> dict[str, Any]:
        return self.request("POST", "/v1/units", {"name": _segment(unit, "unit name")})

    def heartbeat(self, unit: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/units/{_segment(unit, 'unit name')}/heartbeat")

    def get(self, key: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/kv/{_segment(key, 'key')}")

    def put(self, key: str, value: Any, version: int, request_id: str | None = None) -> dict[str, Any]:
        body = {"value": value, "version": version, "request_id": request_id or uuid.uuid4().hex}
        return self.request("PUT", f"/v1/kv/{_segment(key, 'key')}", body)


def _segment(name: object, what: str) -> str:
    """`name` as one path segment. Names outside the API's pattern are refused here: the server would answer 400,
    and a name with "/", "?", "%" or a leading "." could otherwise address another endpoint. Quoting keeps the
    segment a segment should the pattern ever admit such characters."""
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise BadName(f"{what} {name!r:.60} is not valid: use 1 to 200 letters, digits, '.', '_', ':' or '-', "
                      "starting with a letter or digit")
    return quote(name, safe="")


def _certificate_refusal(exc: BaseException) -> str | None:
    """Why the server's certificate failed verification, when that is what ended the connection."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _detail(response: httpx.Response) -> str:
    data = _json_object(response)
    if data is not None and isinstance(data.get("detail"), str):
        return data["detail"]
    return response.text[:200] or response.reason_phrase


def _api_json(response: httpx.Response) -> dict[str, Any]:
    """The JSON object the API answers with; _NotTheApi for anything else."""
    data = _json_object(response)
    if data is None:
        raise _NotTheApi(f"{response.url.host}:{response.url.port} answered {response.status_code} with "
                         f"{response.headers.get('content-type') or 'no content type'}, not the API's JSON: "
                         f"{response.text[:80]!r}")
    return data


def _result(response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 409:
        data = _api_json(response)
        version = data.get("current_version")
        raise VersionConflict(str(data.get("detail")), version if isinstance(version, int) else None)
    if response.status_code >= 400:
        raise ClientError(response.status_code, _detail(response))
    return _api_json(response)

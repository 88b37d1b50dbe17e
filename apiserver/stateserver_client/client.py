"""The unit's client: picks an API server the way the design says and survives losing one.

- The first address is chosen at random (a seedable RNG); the address that worked is stored in a cache file (write a
  temporary file, then rename) and is tried first next time.
- The other addresses are dialled in parallel with a 50 ms stagger, so a dead address costs no full timeout.
- The address list is refreshed from the API's published addresses (the state-machine records).
- A write carries a request id that stays the same across retries, so the server applies it once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from .dial import DIAL_STAGGER, DialError, dedupe, dial_first, dial_order


class ClientError(Exception):
    """The API answered with a client error (4xx other than 409); retrying will not help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class VersionConflict(ClientError):
    def __init__(self, detail: str, current_version: int) -> None:
        super().__init__(409, detail)
        self.current_version = current_version


class Unavailable(Exception):
    """No API server could complete the request before the deadline."""


@dataclass
class ClientConfig:
    addresses: list[str]
    token_file: str
    cache_file: str | None = None
    stagger: float = DIAL_STAGGER
    request_timeout: float = 15.0
    retry_for: float = 60.0

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClientConfig:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown settings in {path}: {', '.join(unknown)}")
        config = cls(**data)
        if not isinstance(config.addresses, list) or not all(isinstance(a, str) for a in config.addresses):
            raise ValueError(f"{path}: addresses must be a list of host:port strings")
        return config


@dataclass
class AddressCache:
    """What the client remembers between runs: the address that worked last, and the last published list."""

    path: Path | None
    last_address: str | None = None
    published: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None) -> AddressCache:
        if path is None:
            return cls(None)
        cache = cls(Path(path))
        try:
            data = json.loads(cache.path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
        except (OSError, ValueError):
            return cache  # a missing or torn cache only costs the sticky preference
        if isinstance(data.get("last_address"), str):
            cache.last_address = data["last_address"]
        if isinstance(data.get("published"), list):
            cache.published = [a for a in data["published"] if isinstance(a, str)]
        return cache

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"last_address": self.last_address, "published": self.published}, indent=1)
        # Temp file in the same directory + rename: readers see the old or the new cache, never half of one.
        fd, tmp = tempfile.mkstemp(prefix=".addr-cache-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class StateClient:
    """Talks to whichever API server answers; thread-safe enough for one caller at a time."""

    def __init__(self, addresses: list[str], token: str, cache_file: str | os.PathLike[str] | None = None,
                 rng: random.Random | None = None, stagger: float = DIAL_STAGGER, request_timeout: float = 15.0,
                 retry_for: float = 60.0, transport: httpx.BaseTransport | None = None,
                 auto_refresh: bool = True) -> None:
        self.configured = dedupe(addresses)
        self.cache = AddressCache.load(cache_file)
        self.rng = rng or random.Random()
        self.stagger = stagger
        self.retry_for = retry_for
        self.current: str | None = None
        self.auto_refresh = auto_refresh
        self.refused_token = False  # set when a server answered 401: retrying elsewhere will not help
        self.http = httpx.Client(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(request_timeout, connect=min(3.0, request_timeout)),
            transport=transport,
        )

    @classmethod
    def from_config(cls, config: ClientConfig, rng: random.Random | None = None) -> StateClient:
        token = Path(config.token_file).read_text(encoding="utf-8").strip()
        return cls(config.addresses, token, config.cache_file, rng=rng, stagger=config.stagger,
                   request_timeout=config.request_timeout, retry_for=config.retry_for)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def addresses(self) -> list[str]:
        """Published addresses first-class, configured ones kept as a fallback (a stale one costs one stagger)."""
        return dedupe(self.cache.published + self.configured)

    def order(self) -> list[str]:
        return dial_order(self.addresses(), self.cache.last_address, self.rng)

    def _probe(self, address: str, need_primary: bool = True) -> str:
        # Ready (authenticated) rather than live: the winner must be able to reach a writable primary. Status
        # reads settle for a server that answers at all (503 = up, but no primary), since that is when they matter.
        response = self.http.get(f"http://{address}/v1/ready")
        if response.status_code == 401:
            self.refused_token = True
        if response.status_code != 200 and (need_primary or response.status_code != 503):
            raise Unavailable(f"{address} answered {response.status_code}: {_detail(response)}")
        return address

    def connect(self, need_primary: bool = True) -> str:
        """Dial in order (sticky first, others staggered) and remember the winner atomically."""
        address, _ = dial_first(self.order(), lambda a: self._probe(a, need_primary), self.stagger,
                                timeout=self.http.timeout.read or 15.0)
        self.current = address
        if self.cache.last_address != address:
            self.cache.last_address = address
            self.cache.save()
        if self.auto_refresh:
            self._refresh_from(address)
        return address

    def _refresh_from(self, address: str) -> None:
        # Best effort, like Juju's login: the server we just reached tells us the current list. A failure here
        # only means the list is refreshed on a later connection.
        try:
            response = self.http.get(f"http://{address}/v1/api-addresses")
            published = response.json().get("addresses") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return
        self._store_published(published)

    def _store_published(self, published: object) -> None:
        if isinstance(published, list) and published and all(isinstance(a, str) for a in published) \
                and published != self.cache.published:
            self.cache.published = list(published)
            self.cache.save()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                need_primary: bool = True) -> dict[str, Any]:
        """Send one request, reconnecting and retrying (same body, so the same request id) until it gets an
        answer that is not "unavailable", or retry_for seconds pass."""
        deadline = time.monotonic() + self.retry_for
        delay, last_error = 0.05, "no attempt made"
        while True:
            try:
                address = self.current or self.connect(need_primary)
                response = self.http.request(method, f"http://{address}{path}", json=body)
            except (httpx.HTTPError, DialError, Unavailable) as exc:
                if self.refused_token:
                    raise ClientError(401, "an API server refused the token; check token_file") from exc
                last_error = f"{type(exc).__name__}: {exc}"
                self.current = None
            else:
                if response.status_code < 500:
                    return _result(response)
                last_error = f"HTTP {response.status_code}: {_detail(response)}"
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
        return self.request("POST", "/v1/units", {"name": unit})

    def heartbeat(self, unit: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/units/{unit}/heartbeat")

    def get(self, key: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/kv/{key}")

    def put(self, key: str, value: Any, version: int, request_id: str | None = None) -> dict[str, Any]:
        body = {"value": value, "version": version, "request_id": request_id or uuid.uuid4().hex}
        return self.request("PUT", f"/v1/kv/{key}", body)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except (ValueError, AttributeError):
        return response.text[:200]


def _result(response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 409:
        data = response.json()
        raise VersionConflict(str(data.get("detail")), int(data.get("current_version", 0)))
    if response.status_code >= 400:
        raise ClientError(response.status_code, _detail(response))
    return response.json()

"""Whether the API servers of the recorded machines answer: GET /v1/live on each, side by side, briefly."""

from __future__ import annotations

import ssl
from concurrent.futures import ThreadPoolExecutor

import httpx

# A live server answers on the same LAN in milliseconds; a dead machine must not hold a status read or a scrape.
PROBE_TIMEOUT = 1.0


def _answers(address: str, timeout: float, tls: ssl.SSLContext | None) -> bool:
    url = f"{'https' if tls else 'http'}://{address}/v1/live"
    try:
        response = httpx.get(url, timeout=timeout, trust_env=False, verify=tls or True)
        # Another service on the port is not this API server; nor is a server whose certificate the CA did not sign.
        return response.status_code == 200 and response.json().get("status") == "ok"
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def probe(addresses: list[str], timeout: float = PROBE_TIMEOUT, tls: ssl.SSLContext | None = None) -> dict[str, bool]:
    """{address: answered} for every address, in about `timeout` at most however many are dead. With `tls` the
    servers are asked over HTTPS and must present a certificate that context trusts."""
    if not addresses:
        return {}
    with ThreadPoolExecutor(max_workers=min(len(addresses), 16)) as pool:
        return dict(zip(addresses, pool.map(lambda a: _answers(a, timeout, tls), addresses), strict=True))

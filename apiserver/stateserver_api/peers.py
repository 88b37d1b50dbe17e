"""Whether the API servers of the recorded machines answer: GET /v1/live on each, side by side, briefly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

# A live server answers on the same LAN in milliseconds; a dead machine must not hold a status read or a scrape.
PROBE_TIMEOUT = 1.0


def _answers(address: str, timeout: float) -> bool:
    try:
        response = httpx.get(f"http://{address}/v1/live", timeout=timeout, trust_env=False)
        # Another service on the port is not this API server.
        return response.status_code == 200 and response.json() == {"status": "ok"}
    except (httpx.HTTPError, ValueError):
        return False


def probe(addresses: list[str], timeout: float = PROBE_TIMEOUT) -> dict[str, bool]:
    """{address: answered} for every address, in about `timeout` at most however many are dead."""
    if not addresses:
        return {}
    with ThreadPoolExecutor(max_workers=min(len(addresses), 16)) as pool:
        return dict(zip(addresses, pool.map(lambda a: _answers(a, timeout), addresses), strict=True))

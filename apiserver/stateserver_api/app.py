"""The HTTP API (FastAPI). Endpoints are sync so pymongo's blocking calls run in Starlette's thread pool."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Body, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import peers, values
from .backend import Backend
from .errors import Conflict, NoPrimary, NotFound, Unreadable
from .limits import MAX_BODY_BYTES, BodyLimit
from .metrics import CertificateCollector, RequestMetrics, SetCollector, route_of
from .status import build_ha_status, recorded_api_addresses
from .tls import ServedCertificate

log = logging.getLogger("stateserver_api")

PUBLIC_PATHS = frozenset({"/v1/live"})
METRICS_PATH = "/metrics"
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"

UnitName = Annotated[str, Path(pattern=KEY_PATTERN, description="Unit name (letters, digits, . _ : -).")]
Key = Annotated[str, Path(pattern=KEY_PATTERN, description="Key (letters, digits, . _ : -).")]


class Problem(BaseModel):
    detail: str


class ConflictProblem(BaseModel):
    detail: str
    current_version: int | None = Field(description="The key's version; null when the stored version is unreadable.")


# strict: "1", true and 1.0 are not versions, and 5 is not a name; no silent conversions of client input.
class UnitRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=KEY_PATTERN, description="The unit's name, e.g. wordpress-0.")


class Unit(BaseModel):
    name: str
    registered: str | None
    last_heartbeat: str | None


class KvWrite(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    value: JsonValue = Field(description="Any JSON value (at most 64 KiB once encoded).")
    version: int = Field(ge=0, le=2**62, description="The version the key is at now; 0 creates the key.")
    request_id: str = Field(pattern=REQUEST_ID_PATTERN,
                            description="Idempotency key: a retried write with the same id is applied once.")


class KvEntry(BaseModel):
    key: str
    value: JsonValue
    version: int


class KvWritten(BaseModel):
    key: str
    version: int
    replayed: bool


class Ready(BaseModel):
    ready: bool
    primary: str | None
    replica_set: str | None


class Certificate(BaseModel):
    not_after: str = Field(description="When the served certificate expires (ISO 8601, UTC).")
    subject: str
    days_left: float = Field(description="Days until not_after; negative once it has expired.")


class Live(BaseModel):
    status: str
    certificate: Certificate | None = Field(
        None, description="The certificate this server presents to new connections; absent when serving plain HTTP.")


class Addresses(BaseModel):
    addresses: list[str]


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Bad input"},
    401: {"model": Problem, "description": "Missing or wrong bearer token"},
    413: {"model": Problem, "description": f"Request body larger than {MAX_BODY_BYTES} bytes"},
    503: {"model": Problem, "description": "No writable primary (the reason is in detail)"},
}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(backend: Backend, token: str, expose_docs: bool = True, scrape_token: str | None = None,
               probe: Callable[[list[str]], dict[str, bool]] = peers.probe,
               certificate: ServedCertificate | None = None) -> FastAPI:
    """Build the app around a backend and the deployment's bearer token.

    scrape_token, when given, opens /metrics only (for Prometheus, whose configuration then never holds the token
    that writes). probe tells which API addresses answer (peers.probe; tests substitute their own). certificate is
    the one served over HTTPS (None: plain HTTP); /v1/live and /metrics report its expiry.
    """
    if not token:
        raise ValueError("the bearer token must not be empty")
    if scrape_token is not None and (not scrape_token or scrape_token == token):
        raise ValueError("the scrape token must be set and differ from the bearer token")
    expected = token.encode()
    scrape = scrape_token.encode() if scrape_token else None
    registry = CollectorRegistry()
    registry.register(SetCollector(backend.read_set, probe))
    if certificate is not None:
        registry.register(CertificateCollector(certificate))
    request_metrics = RequestMetrics(registry)
    app = FastAPI(
        title="stateserver API",
        version="1",
        openapi_url="/v1/openapi.json" if expose_docs else None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.backend = backend
    # Added first, so it runs inside authentication: only an authenticated request's body is ever read.
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    @app.middleware("http")
    async def authenticate_and_log(request: Request, call_next: Any) -> Any:
        # Authentication runs before routing and body parsing, so nothing about an endpoint (not even whether its
        # input is valid) is revealed without the token.
        started = time.monotonic()
        request_id = request.headers.get("x-request-id", "")[:128] or uuid.uuid4().hex
        route = route_of(app.router.routes, request.scope)
        if not _allowed(request.url.path, request.headers.get("authorization"), expected, scrape):
            # Closing the connection means an unread body is never drained and the client holds nothing open.
            response: Any = JSONResponse({"detail": "missing or invalid bearer token"}, status_code=401,
                                         headers={"WWW-Authenticate": "Bearer", "Connection": "close"})
        else:
            try:
                response = await call_next(request)
            except Exception:
                # A bug: the outermost handler answers 500; it is still a request to count.
                request_metrics.observe(request.method, route, 500, time.monotonic() - started)
                raise
        request_metrics.observe(request.method, route, response.status_code, time.monotonic() - started)
        response.headers["X-Request-Id"] = request_id
        log.info("request", extra={
            "request_id": request_id, "method": request.method, "path": request.url.path,
            "status": response.status_code, "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "client": request.client.host if request.client else None,
        })
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_input(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 404/405 from routing and FastAPI's own 400 for an unparsable body: same {"detail": str} shape as ours.
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def bug(_request: Request, exc: Exception) -> JSONResponse:
        # Only a bug reaches here (client input and database failures are handled above): log it, say little.
        log.error("unhandled error", exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.exception_handler(NoPrimary)
    async def no_primary(_request: Request, exc: NoPrimary) -> JSONResponse:
        log.warning("no primary", extra={"reason": str(exc)})
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Conflict)
    async def conflict(_request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "current_version": exc.current_version}, status_code=409)

    @app.exception_handler(Unreadable)
    async def unreadable(_request: Request, exc: Unreadable) -> JSONResponse:
        # Not a 5xx: every server reads the same document, so a client retrying elsewhere would only wait out its
        # retry window. The backend has logged it; the answer names the key, the problem and the repair.
        return JSONResponse({"detail": str(exc), "current_version": exc.current_version}, status_code=409)

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.get("/v1/live", tags=["health"], response_model=Live, response_model_exclude_none=True,
             summary="Liveness: the process answers (no authentication), with the served certificate's expiry")
    def live() -> dict[str, Any]:
        # The certificate is no secret: every TLS client receives it in the handshake.
        if certificate is None:
            return {"status": "ok"}
        return {"status": "ok", "certificate": certificate.info.report()}

    @app.get("/v1/ready", tags=["health"], response_model=Ready, responses=ERRORS,
             summary="Readiness: a writable primary is reachable")
    def ready() -> dict[str, Any]:
        return backend.ready()

    @app.get("/v1/ha-status", tags=["ha"], responses=ERRORS,
             summary="Every state machine with its member's vote, state and the replica set's primary")
    def ha_status() -> dict[str, Any]:
        reading = backend.read_set()
        return build_ha_status(reading, probe(recorded_api_addresses(reading)))

    # Not in the OpenAPI document: it is Prometheus's text format, not JSON.
    @app.get(METRICS_PATH, include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/api-addresses", tags=["ha"], response_model=Addresses, responses=ERRORS,
             summary="The API addresses published in the state-machine records")
    def api_addresses() -> dict[str, Any]:
        return {"addresses": backend.api_addresses()}

    @app.post("/v1/units", tags=["units"], response_model=Unit, responses=ERRORS,
              summary="Register a unit (idempotent)")
    def register_unit(registration: UnitRegistration) -> dict[str, Any]:
        return backend.register_unit(registration.name)

    @app.get("/v1/units/{name}", tags=["units"], response_model=Unit,
             responses={**ERRORS, 404: {"model": Problem, "description": "Unknown unit"}})
    def get_unit(name: UnitName) -> dict[str, Any]:
        return backend.get_unit(name)

    @app.post("/v1/units/{name}/heartbeat", tags=["units"], response_model=Unit,
              responses={**ERRORS, 404: {"model": Problem, "description": "Unknown unit"}})
    def heartbeat(name: UnitName) -> dict[str, Any]:
        return backend.heartbeat(name)

    @app.get("/v1/kv/{key}", tags=["kv"], response_model=KvEntry, operation_id="getKey",
             responses={**ERRORS, 404: {"model": Problem, "description": "Unknown key"},
                        409: {"model": ConflictProblem, "description": "The stored entry is unreadable"}})
    def kv_get(key: Key) -> dict[str, Any]:
        return backend.kv_get(key)

    # The link says how a client follows a write: read the key back (the stateful fuzz test follows it).
    @app.put("/v1/kv/{key}", tags=["kv"], response_model=KvWritten, operation_id="putKey",
             responses={**ERRORS, 409: {"model": ConflictProblem,
                                        "description": "Stale version, or the stored entry is unreadable"},
                        200: {"links": {
                            "ReadWrittenKey": {"operationId": "getKey", "parameters": {"key": "$response.body#/key"}},
                        }}},
             summary="Write a key if it is at the given version (optimistic concurrency, idempotent by request_id)")
    def kv_put(key: Key, write: Annotated[KvWrite, Body()]) -> Any:
        try:
            values.encode(write.value)
        except values.BadValue as exc:
            return JSONResponse({"detail": f"value: {exc}"}, status_code=400)
        return backend.kv_put(key, write.value, write.version, write.request_id)

    return app


def _allowed(path: str, header: str | None, token: bytes, scrape: bytes | None) -> bool:
    if path in PUBLIC_PATHS or _authorized(header, token):
        return True
    return path == METRICS_PATH and scrape is not None and _authorized(header, scrape)


def _authorized(header: str | None, expected: bytes) -> bool:
    if not header:
        return False
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    # compare_digest over bytes: constant time in the token's content; non-ASCII input is simply a mismatch.
    return hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), expected)

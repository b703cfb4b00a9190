"""The edge of every request of ``lepton serve``'s FastAPI app: the app object, the
request id, the bearer token, the body limit and JSON parsing, and the error shapes.

The checks run in a middleware, before any route: with a token set, every route but
``/v2/health/live`` and ``/v2/health/ready`` needs ``Authorization: Bearer <token>``
(401 with ``WWW-Authenticate: Bearer`` otherwise). The token is compared as its SHA-256,
in constant time (:func:`hmac.compare_digest`): the app is handed only the hash. Every
response carries ``X-Request-Id`` (an incoming one is kept: Ray Serve's proxy sees to it), and the
log line of each request names it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine import __version__
from engine.serve.validation import RequestError

log = logging.getLogger("lepton.serve")

app = FastAPI(
    title="Lepton Engine", version=__version__, docs_url=None, redoc_url=None, openapi_url=None
)

#: Set by :class:`Ingress` in its replica process (middleware runs outside the instance).
STATE: dict[str, Any] = {}
OPEN_ROUTES = ("/v2/health/live", "/v2/health/ready")


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else "Request refused."
    if exc.status_code == 404:
        detail = f"No route {request.method} {request.url.path}; see /docs."
    return error_response(exc.status_code, detail, dict(exc.headers or {}))


class _Edge:
    """The request id, the token and the declared body size, before any route: a plain
    ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs about a millisecond a
    request, as much as the rest of the ingress)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        request = Request(scope)
        incoming = request.headers.get("x-request-id", "")
        # Serve's proxy hands every request an X-Request-Id (the client's, or one it makes)
        # and puts it on the response itself: use it. Outside Serve, make one.
        rid = incoming[:128] if incoming else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = 0

        async def respond(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if not incoming:
                    headers = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                    message = {**message, "headers": headers}
            await send(message)

        refused = _refused(request)
        await (refused if refused is not None else self.inner)(scope, receive, respond)
        log.info(
            "request %s %s %s -> %d in %.1f ms",
            rid,
            request.method,
            scope.get("path", ""),
            status,
            (time.perf_counter() - started) * 1000,
        )


app.add_middleware(_Edge)


def _refused(request: Request) -> Response | None:
    """401 without the token (when one is set); 413 for a body declared too large."""
    digest = STATE.get("token_sha256")
    if digest and request.url.path not in OPEN_ROUTES:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        presented = hashlib.sha256(given.strip().encode()).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, digest):
            return error_response(
                401,
                "This service needs a bearer token: send 'Authorization: Bearer <token>'.",
                {"WWW-Authenticate": 'Bearer realm="lepton"'},
            )
    length = request.headers.get("content-length")
    limit = STATE.get("max_body_bytes", 0)
    if length and length.isdigit() and limit and int(length) > limit:
        return error_response(413, f"The request body is {length} bytes; the limit is {limit}.")
    return None


async def json_body(request: Request) -> Any:
    limit = STATE["max_body_bytes"]
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"The request body is over the limit of {limit} bytes.", 413)
        chunks.append(chunk)
    if request.headers.get("inference-header-content-length"):
        raise RequestError("The binary tensor extension is not supported: send JSON tensors.")

    def constant(name: str) -> Any:
        raise RequestError(f"{name} is not valid JSON.")

    try:
        raw = b"".join(chunks)
        if len(raw) > 256 * 1024:  # a big body parses on a thread, off the event loop
            return await asyncio.to_thread(json.loads, raw, parse_constant=constant)
        return json.loads(raw, parse_constant=constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise RequestError("The request body is nested too deeply.") from None


def unavailable(exc: Exception) -> RequestError:
    """A model deployment that cannot take the request: backpressure or a replica down."""
    from ray.serve.exceptions import BackPressureError

    retry = str(max(1, int(round(STATE.get("retry_after_s", 1) or 1))))
    if isinstance(exc, BackPressureError):
        error = RequestError(
            "The model is at capacity: too many requests queued. Retry later.",
            int(STATE.get("backpressure_status", 503)),
        )
    else:
        log.warning(
            "model call failed: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        )
        error = RequestError(
            "The model is not available right now (a replica is restarting). Retry later.", 503
        )
    error.headers = {"Retry-After": retry}  # type: ignore[attr-defined]
    return error

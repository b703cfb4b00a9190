"""The HTTP face of ``lepton serve``: a FastAPI app (``@serve.ingress``) in front of one
:class:`~engine.serve.deployment.ModelServer` deployment per model version.

Routes (``/docs`` and ``/openapi.json`` describe them, with each model's input schema):

- KServe V1 / TF Serving REST: ``POST /v1/models/{name}[/versions/{v}]:predict``,
  ``GET /v1/models``, ``GET /v1/models/{name}[/versions/{v}]``.
- Open Inference Protocol (KServe V2): ``GET /v2/health/live|ready``, ``GET /v2``,
  ``GET /v2/models/{name}[/versions/{v}][/ready]``, ``POST .../infer``.
- Feedback (with ``serve.log.dir``): ``POST /v1/models/{name}/feedback``, true labels by
  request id (:mod:`engine.serve.feedback`); the replicas' answers say which request ids
  they logged, and the ingress remembers them.

Every request gets a request id (an incoming ``X-Request-Id`` is kept), sent back in the
``X-Request-Id`` header; V1 bodies carry it as ``request_id``, and the log lines name it.
With a token, every route but the two V2 health routes needs ``Authorization: Bearer``
(compared in constant time, against its SHA-256: the token itself is never handed to
Ray). A request that names no version goes to the model's traffic split, else its
default version; the response names the version that answered (``X-Model-Version``, and
``model_version`` in V2 bodies). Errors are ``{"error": message}`` with a 4xx for anything
a client sent; backpressure (too many requests queued) is 503 or 429 with Retry-After.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time
# (a string annotation `Request` would become a required query parameter under Serve).

import asyncio
import random
import time
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve

from engine import __version__
from engine.serve import http_edge
from engine.serve.http_edge import app, error_response, json_body, unavailable
from engine.serve.signature import Signature
from engine.serve.stats import LatencyStats
from engine.serve.validation import InputValidator, RequestError


@serve.ingress(app)
class Ingress:
    """Routes requests to the model deployments (see the module doc)."""

    def __init__(self, models: dict[str, dict[str, Any]], spec: dict[str, Any]) -> None:
        self.models = models  # name -> version -> DeploymentHandle
        self.spec = spec
        # Through the module: Serve pickles this class by value, and a global captured
        # with it would be a copy of the dict the middleware reads.
        http_edge.STATE.update(
            token_sha256=spec.get("token_sha256"),
            max_body_bytes=spec["limits"]["max_body_bytes"],
            retry_after_s=spec["retry_after_s"],
            backpressure_status=spec["backpressure_status"],
        )
        self.described: dict[tuple[str, str], dict[str, Any]] = {}
        self.validators: dict[tuple[str, str], InputValidator] = {}
        self.stats: dict[tuple[str, str], LatencyStats] = {}
        from engine.serve.feedback import desk_for

        self.feedback = desk_for(spec)  # None without serve.log.dir

    # -- models, versions, validation --------------------------------------------------

    def _version(self, name: str, version: str | None) -> str:
        if name not in self.models:
            raise RequestError(f"No model {name!r}; served: {', '.join(sorted(self.models))}.", 404)
        if version is not None:
            if version not in self.models[name]:
                raise RequestError(
                    f"Model {name} has no version {version!r}; versions: "
                    f"{', '.join(self.models[name])}.",
                    404,
                )
            return version
        split = self.spec["traffic"].get(name)
        if split:
            versions = list(split)
            return random.choices(versions, weights=[split[v] for v in versions])[0]
        return str(self.spec["defaults"][name])

    async def _describe(self, name: str, version: str, refresh: bool = False) -> dict[str, Any]:
        key = (name, version)
        if refresh or key not in self.described:
            described = await self.models[name][version].describe.remote()
            self.described[key] = described
            limits = self.spec["limits"]
            self.validators[key] = InputValidator(
                Signature.from_dict(described["signature"]),
                max_instances=limits["max_instances"],
                max_image_bytes=limits["max_image_bytes"],
                max_image_pixels=limits["max_image_pixels"],
            )
        return self.described[key]

    async def _predict(
        self, request: Request, name: str, version: str | None, parse: Any
    ) -> tuple[str, list[Any], Any]:
        chosen = self._version(name, version)
        try:
            await self._describe(name, chosen)
        except Exception as exc:
            raise unavailable(exc) from None
        body = await json_body(request)
        # On a thread: checking a large request (a big image as nested lists) takes long
        # enough to hold up every other request on this event loop.
        parsed = await asyncio.to_thread(parse, body, self.validators[(name, chosen)])
        inputs = parsed if isinstance(parsed, list) else parsed.inputs
        started = time.perf_counter()
        stats = self.stats.setdefault((name, chosen), LatencyStats())
        try:
            result = await self.models[name][chosen].predict.remote(
                inputs, request.state.request_id
            )
        except Exception as exc:
            stats.add(time.perf_counter() - started, ok=False)
            raise unavailable(exc) from None
        stats.add(time.perf_counter() - started, ok="error" not in result)
        if "error" in result:
            raise RequestError(result["error"], 400)
        if result.get("logged") and self.feedback is not None:
            self.feedback.remember(name, chosen, request.state.request_id, len(inputs))
        if result.get("checkpoint") != self.described[(name, chosen)]["info"].get("checkpoint"):
            await self._describe(name, chosen, refresh=True)  # new weights: new signature
        return chosen, result["predictions"], parsed

    # -- KServe V1 ----------------------------------------------------------------------

    @app.post("/v1/models/{name}:predict")
    async def v1_predict(self, name: str, request: Request) -> Response:
        return await self._v1(request, name, None)

    @app.post("/v1/models/{name}/versions/{version}:predict")
    async def v1_predict_version(self, name: str, version: str, request: Request) -> Response:
        return await self._v1(request, name, version)

    async def _v1(self, request: Request, name: str, version: str | None) -> Response:
        from engine.serve.v1 import parse_v1, v1_response

        try:
            chosen, predictions, _ = await self._predict(request, name, version, parse_v1)
        except RequestError as exc:
            return error_response(exc.status, exc.message, getattr(exc, "headers", None))
        body = {
            **v1_response(predictions),
            "model_name": name,
            "model_version": chosen,
            "request_id": request.state.request_id,
        }
        return JSONResponse(body, headers={"X-Model-Name": name, "X-Model-Version": chosen})

    @app.post("/v1/models/{name}/feedback")
    async def v1_feedback(self, name: str, request: Request) -> Response:
        from engine.serve.feedback import parse_feedback

        try:
            self._version(name, None)  # a 404 for an unknown model
            if self.feedback is None:
                raise RequestError(
                    "This service keeps no prediction log (serve.log.dir is not set), so it "
                    "takes no feedback.",
                    404,
                )
            items = parse_feedback(await json_body(request))
        except RequestError as exc:
            return error_response(exc.status, exc.message)
        try:
            body = await asyncio.to_thread(self.feedback.take, name, items)
        except Exception as exc:  # the log's storage is down: the client may retry
            http_edge.log.warning("feedback for %s not stored: %s", name, exc)
            retry = str(max(1, round(self.spec["retry_after_s"] or 1)))
            return error_response(
                503,
                "The feedback could not be stored right now. Retry later.",
                {"Retry-After": retry},
            )
        return JSONResponse(body)

    @app.get("/v1/models")
    async def v1_models(self) -> Response:
        return JSONResponse({"models": [await self._model_status(n) for n in sorted(self.models)]})

    @app.get("/v1/models/{name}")
    async def v1_model(self, name: str) -> Response:
        if name not in self.models:
            return error_response(
                404, f"No model {name!r}; served: {', '.join(sorted(self.models))}."
            )
        return JSONResponse(await self._model_status(name))

    @app.get("/v1/models/{name}/versions/{version}")
    async def v1_model_version(self, name: str, version: str) -> Response:
        try:
            self._version(name, version)
        except RequestError as exc:
            return error_response(exc.status, exc.message)
        status = await self._model_status(name, only=version)
        return JSONResponse(status)

    async def _model_status(self, name: str, only: str | None = None) -> dict[str, Any]:
        versions, states = {}, []
        for version in self.models[name]:
            if only is not None and version != only:
                continue
            try:
                described = await self._describe(name, version, refresh=True)
                state, error = "AVAILABLE", ""
            except Exception as exc:  # a replica not up yet, or failing to load
                described, state, error = (
                    {"info": {}},
                    "UNAVAILABLE",
                    str(exc).splitlines()[0][:300],
                )
            states.append(
                {
                    "version": version,
                    "state": state,
                    "status": {
                        "error_code": "OK" if not error else "UNAVAILABLE",
                        "error_message": error,
                    },
                }
            )
            stats = self.stats.get((name, version))
            versions[version] = {
                **described["info"],
                "state": state,
                "requests": stats.summary() if stats else LatencyStats().summary(),
            }
        return {
            "name": name,
            "model_version_status": states,
            "task": self.spec["tasks"].get(name),
            "default_version": self.spec["defaults"][name],
            "traffic": self.spec["traffic"].get(name) or {self.spec["defaults"][name]: 100},
            "versions": versions,
        }

    # -- Open Inference Protocol (V2) ---------------------------------------------------

    @app.get("/v2/health/live")
    async def v2_live(self) -> Response:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready")
    async def v2_ready(self) -> Response:
        for name, versions in self.models.items():
            for version in versions:
                if not await self._ready(name, version):
                    return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True})

    async def _ready(self, name: str, version: str) -> bool:
        try:
            await self._describe(name, version)
            return True
        except Exception:
            return False

    @app.get("/v2")
    async def v2_server(self) -> Response:
        return JSONResponse({"name": "lepton", "version": __version__, "extensions": []})

    @app.get("/v2/models/{name}")
    async def v2_model(self, name: str) -> Response:
        return await self._v2_metadata(name, None)

    @app.get("/v2/models/{name}/versions/{version}")
    async def v2_model_version(self, name: str, version: str) -> Response:
        return await self._v2_metadata(name, version)

    async def _v2_metadata(self, name: str, version: str | None) -> Response:
        from engine.serve.v2 import v2_model_metadata

        try:
            chosen = version if version is not None else str(self.spec["defaults"].get(name))
            self._version(name, chosen)
            described = await self._describe(name, chosen)
        except RequestError as exc:
            return error_response(exc.status, exc.message)
        signature = Signature.from_dict(described["signature"])
        versions = [chosen] if version is not None else list(self.models[name])
        body = v2_model_metadata(
            signature,
            name=name,
            versions=versions,
            platform=f"lepton_{self.spec['tasks'].get(name)}",
        )
        return JSONResponse(body)

    @app.get("/v2/models/{name}/ready")
    async def v2_model_ready(self, name: str) -> Response:
        return await self._v2_ready(name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def v2_model_version_ready(self, name: str, version: str) -> Response:
        return await self._v2_ready(name, version)

    async def _v2_ready(self, name: str, version: str | None) -> Response:
        try:
            chosen = version if version is not None else str(self.spec["defaults"].get(name))
            self._version(name, chosen)
        except RequestError as exc:
            return error_response(exc.status, exc.message)
        ready = await self._ready(name, chosen)
        return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)

    @app.post("/v2/models/{name}/infer")
    async def v2_infer(self, name: str, request: Request) -> Response:
        return await self._v2(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def v2_infer_version(self, name: str, version: str, request: Request) -> Response:
        return await self._v2(request, name, version)

    async def _v2(self, request: Request, name: str, version: str | None) -> Response:
        from engine.serve.v2 import parse_v2, v2_response

        try:
            chosen, predictions, parsed = await self._predict(request, name, version, parse_v2)
            signature = Signature.from_dict(self.described[(name, chosen)]["signature"])
            body = v2_response(
                signature, predictions, model_name=name, model_version=chosen, request=parsed
            )
        except RequestError as exc:
            return error_response(exc.status, exc.message, getattr(exc, "headers", None))
        return JSONResponse(body, headers={"X-Model-Name": name, "X-Model-Version": chosen})

    # -- docs -----------------------------------------------------------------------------

    @app.get("/openapi.json")
    async def openapi(self) -> Response:
        from engine.serve.openapi_doc import openapi_document

        described = {}
        for name, versions in self.models.items():
            for version in versions:
                if await self._ready(name, version):
                    described[(name, version)] = self.described[(name, version)]
        return JSONResponse(openapi_document(self.spec, described))

    @app.get("/docs")
    async def docs(self) -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html

        html: HTMLResponse = get_swagger_ui_html(
            openapi_url="openapi.json", title="Lepton Engine API"
        )
        return html

    # -- for `lepton serve update|status` ------------------------------------------------

    async def app_spec(self) -> dict[str, Any]:
        """The spec this app was built from (no secret: the token is only a hash here)."""
        return self.spec

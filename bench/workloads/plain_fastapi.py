"""The baseline for `lepton serve`: what one writes by hand with FastAPI and uvicorn.

One process, one uvicorn worker, the same task predictor ``lepton serve`` uses
(``engine.runs.checkpoint.load_model(ckpt).predictor()``), no Ray. The same V1 route and
body as the served app, so one client drives both:

- ``POST /v1/models/{name}:predict`` with ``{"instances": [...]}``: a plain ``def`` route,
  so FastAPI runs it in its threadpool; each request calls ``predictor.predict`` on its own
  instances, one request at a time per thread (no batching across requests), and answers
  ``{"predictions": [...]}``.
- ``GET /v2/health/ready``: 200 once every model is loaded (the server listens only then);
  ``GET /v2/health/live``: the HTTP floor, no model involved (async, as the served app's).

``python -m bench.workloads.plain_fastapi --model NAME=CHECKPOINT [...] --port PORT``.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

import argparse
from typing import Any


def build_app(predictors: dict[str, Any]) -> Any:
    from fastapi import Body, FastAPI, HTTPException
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.post("/v1/models/{name}:predict")
    def predict(name: str, body: dict = Body(...)) -> Any:
        predictor = predictors.get(name)
        if predictor is None:
            raise HTTPException(404, f"no model {name!r}")
        instances = body.get("instances")
        if not isinstance(instances, list):
            raise HTTPException(400, 'send {"instances": [...]}')
        return JSONResponse({"predictions": predictor.predict(instances)})

    @app.get("/v2/health/ready")
    def ready() -> Any:
        return {"ready": True}

    @app.get("/v2/health/live")
    async def live() -> Any:
        return JSONResponse({"live": True})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    import torch
    import uvicorn

    from engine.runs.checkpoint import load_model

    torch.set_num_threads(args.threads)
    predictors = {}
    for spec in args.model:
        name, _, checkpoint = spec.partition("=")
        predictors[name] = load_model(checkpoint).predictor("cpu")
    print(f"plain FastAPI: {', '.join(predictors)} on {args.host}:{args.port}", flush=True)
    uvicorn.run(
        build_app(predictors),
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()

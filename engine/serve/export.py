"""``lepton serve ... --export serve.yaml``: a Ray Serve config file for ``serve deploy``.

The file names each model by its checkpoint path (made absolute) and holds the checked
``serve`` settings; it holds no secret. Its application's ``import_path`` is
:func:`engine.serve.app.build_from_args`, which rebuilds the same app where it is deployed
(reading the token there, from ``LEPTON_SERVE_TOKEN`` or ``serve.token_file``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from engine.serve.settings import ServeConfig


def serve_config(config: ServeConfig, model_args: list[str]) -> dict[str, Any]:
    from engine.serve.app import BUILDER, app_spec
    from engine.serve.models import resolve_models

    s = config.serve
    sources = resolve_models(model_args)
    app_spec(sources, s, None)  # the same checks as lepton serve (traffic, default versions)
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": s.host, "port": s.port, "request_timeout_s": s.request_timeout_s},
        "applications": [
            {
                "name": s.app_name,
                "route_prefix": "/",
                "import_path": BUILDER,
                "args": {
                    "models": [f"{m.name}:{m.version}={m.checkpoint}" for m in sources],
                    "serve": dataclasses.asdict(s),
                },
            }
        ],
    }


def write_serve_config(
    config: ServeConfig, model_args: list[str], output: str, *, force: bool
) -> Path:
    import yaml

    from engine.runs.outputs import check_output_path

    path = Path(output)
    check_output_path(path, force=force)
    body = serve_config(config, model_args)
    text = "# Ray Serve config written by `lepton serve --export`: serve deploy " + path.name + "\n"
    text += yaml.safe_dump(body, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path

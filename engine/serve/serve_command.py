"""``lepton serve``: publish trained models over HTTP with Ray Serve."""

from __future__ import annotations

import argparse
from typing import Any

from engine.argtypes import add_config_dir

DESCRIPTION = """\
Serve models over HTTP (Ray Serve): the KServe V1 REST API and the Open Inference
Protocol (KServe V2) on one app, with /docs.

  lepton serve runs/<run>                       a run's best checkpoint, as model <task>
  lepton serve digits=runs/a digits:2=runs/b     two versions of model "digits"
  lepton serve runs/<sweep> serve.port=8100      a sweep's best trial
  lepton serve digits=runs/a digits:2=runs/b 'serve.traffic={digits:{1:90,2:10}}'
  lepton serve update digits:2 runs/c/checkpoint_000004   new weights, no request dropped
  lepton serve status | shutdown
  lepton serve runs/<run> --export serve.yaml   a config file for `serve deploy`

PATH is a run, checkpoint or sweep directory (or s3:// / gs:// URI); NAME[:VERSION]=PATH
names it. serve.* keys: conf/serve/default.yaml (host, port, batch.*, replicas.*,
max_queued_requests, limits.*, traffic, default_version, token_file...). A bearer token
comes from LEPTON_SERVE_TOKEN or serve.token_file, never the command line.
Without ray.address / RAY_ADDRESS the service runs here until Ctrl-C; with one it is
deployed to that cluster and the command returns."""

ACTIONS = ("status", "shutdown", "update")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve models over HTTP (KServe V1 + Open Inference Protocol) on Ray Serve",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="[NAME[:VERSION]=]PATH | status | shutdown | update",
        help="models to serve (and serve.* overrides), or an action on a running service",
    )
    parser.add_argument(
        "--export",
        metavar="FILE",
        default=None,
        help="write a Ray Serve config file (serve deploy FILE) instead of serving",
    )
    parser.add_argument("--force", action="store_true", help="with --export: replace FILE")
    add_config_dir(parser)
    parser.set_defaults(overrides=[])
    return parser


def split_targets(targets: list[str]) -> tuple[list[str], list[str]]:
    """(models, overrides): ``serve.*``, ``serve=...`` and ``ray.address=...`` are overrides."""
    models, overrides = [], []
    for t in targets:
        key = t.lstrip("+~").split("=", 1)[0]
        if "=" in t and (key in ("serve", "ray.address") or key.startswith(("serve.", "ray."))):
            overrides.append(t)
        else:
            models.append(t)
    return models, overrides


def run(args: argparse.Namespace) -> int:
    from engine.serve import service
    from engine.serve.settings import load_serve_config

    models, overrides = split_targets([*args.targets, *args.overrides])
    config = load_serve_config(overrides, args.config_dir)
    action = models[0] if models and models[0] in ACTIONS else None
    if action in ("status", "shutdown"):
        _no_more(models[1:], action)
        return service.status(config) if action == "status" else service.shutdown(config)
    if action == "update":
        return service.update(config, models[1:])
    if args.export:
        return service.export(config, models, args.export, force=args.force)
    return service.serve_models(config, models)


def _no_more(rest: list[str], action: str) -> None:
    from engine.errors import ConfigError

    if rest:
        raise ConfigError(
            f"lepton serve {action} takes no paths (got {rest[0]!r}).",
            hint="Pick the app with serve.app_name=NAME, the cluster with ray.address=ADDR.",
        )

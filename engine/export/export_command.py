"""``lepton export``: a trained model as ONNX, a torch.export program or safetensors,
optionally int8, with the size, metric and latency it trades."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="export a trained model (ONNX, torch.export, safetensors; int8)",
        description="Export a run's best checkpoint (or a checkpoint, or a sweep's best trial) "
        "for deployment. The export directory holds the model and a task.json, so lepton "
        "evaluate / predict / serve take it like a checkpoint; export.json and the printed "
        "table give file size, validation metric and CPU latency before and after.",
    )
    parser.add_argument("path", help="run, sweep or checkpoint directory (or an s3:// / gs:// URI)")
    parser.add_argument(
        "--format",
        dest="fmt",
        required=True,
        choices=("onnx", "torch-export", "safetensors"),
        help="onnx (onnxruntime), torch-export (a .pt2 program) or safetensors (weights only)",
    )
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        help="int8 weights (and activations) through onnxruntime's quantization (onnx only)",
    )
    parser.add_argument(
        "-o",
        "--output",
        help="export directory (default: <run>/exports/<checkpoint>-<format>[-int8])",
    )
    parser.add_argument("--force", action="store_true", help="replace an earlier export there")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for the latency figures (default 1)"
    )
    parser.add_argument(
        "--calibration-samples",
        type=int,
        default=256,
        help="training samples that calibrate static int8 (vision CNNs; default 256)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print export.json instead of the table"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from engine.export.exporter import ExportRequest, export
    from engine.export.report import format_report

    request = ExportRequest(
        path=args.path,
        fmt=args.fmt,
        quantize=args.quantize,
        output=args.output,
        force=args.force,
        threads=args.threads,
        calibration_samples=args.calibration_samples,
    )
    # A task may print while it loads data; keep stdout for the result alone.
    with contextlib.redirect_stdout(sys.stderr):
        report = export(request)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0

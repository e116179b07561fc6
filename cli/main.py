"""The ``lrp-onnx`` command line.

Each sub-command lives in its own module, which exposes ``add_parser(subparsers)``;
the parser sets ``func`` (a callable taking the parsed namespace and returning an
exit code). Modules are imported lazily by name so that commands which need torch
(``train``, ``export``) never make the runtime commands import it.

Expected errors derive from :class:`lrp_onnx.lrp_graph.errors.LRPError`: they are
printed as one line, ``lrp-onnx: error: ...``, with exit code 2 and no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..lrp_graph.errors import LRPError

#: (module, attribute) of each sub-command's ``add_parser`` function, in help order.
COMMANDS: list[tuple[str, str]] = [
    ("lrp_onnx.cli.explain", "add_parser"),
    ("lrp_onnx.cli.compile", "add_parser"),
    ("lrp_onnx.cli.check", "add_parser"),
    ("lrp_onnx.cli.data", "add_parsers"),
    ("lrp_onnx.cli.export", "add_parser"),
    ("lrp_onnx.cli.flip", "add_parsers"),
    ("lrp_onnx.cli.serve", "add_parser"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrp-onnx",
        description="Layer-wise Relevance Propagation for ONNX models, compiled into ONNX.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, attr in COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # sub-command not part of this build
            raise
        getattr(module, attr)(sub)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("lrp-onnx")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LRPError as exc:
        print(f"lrp-onnx: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lrp-onnx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

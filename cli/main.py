"""The ``lrp-onnx`` command line: the one place that registers every sub-command.

:data:`COMMANDS` is the table of sub-commands: (name, module in ``lrp_onnx.cli``, one-line
help). Every command module exposes the same two functions,

    add_arguments(parser)   add the command's options to its ``argparse`` parser
    run(args) -> int        do the work; return the exit code

(``main`` stores ``run`` as ``args.command_run``: a command may not use that name itself).
and a module docstring: its text before ``examples:`` is the command's description in
``--help``, the ``examples:`` section its epilog. A command module is imported only when
its command is given (or for ``lrp-onnx COMMAND --help``), so ``lrp-onnx explain`` never
imports torch or another command's dependencies. Rows whose module is not part of this
build (``batch``, ``web``) are left out.

Expected errors derive from :class:`lrp_onnx.lrp_graph.errors.LRPError`: they are printed
as one line, ``lrp-onnx: error: ...``, with exit code 2 and no traceback; so are errors of
the operating system while reading or writing files (permissions, a full disk).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from ..lrp_graph.errors import LRPError
from .options import printable

PACKAGE = "lrp_onnx.cli"

#: (command, module in lrp_onnx.cli, one-line help), in the order ``--help`` lists them.
COMMANDS: list[tuple[str, str, str]] = [
    ("explain", "explain", "explain a model's decision for an input array or a recording"),
    ("compile", "compile", "compile a model into an explainer ONNX model (logits + relevance)"),
    ("check", "check", "show which rule every node gets; mark unsupported nodes"),
    ("serve", "serve", "serve predictions and explanations over HTTP, with a viewer page"),
    ("web", "web", "write a static site that explains recordings in the browser (onnxruntime-web)"),
    ("batch", "batch", "explain a whole dataset in shards (resumable; --ray for a cluster)"),
    ("flip", "flip", "pixel-flipping: how fast accuracy falls as the most relevant bins are removed"),
    ("augment", "augment", "LRP-guided augmentation: blur each input's most relevant bins (Moore mean)"),
    ("data", "data", "make or inspect speech corpora"),
    ("train", "train", "train a speech model (AlexNet or ResNet) with checkpoints and --resume"),
    ("export", "export", "export a training run's best model to ONNX (verified with onnxruntime)"),
    ("reproduce", "reproduce", "rerun the study's experiments and write OUT_DIR/report.md"),
]


def available_commands() -> list[tuple[str, str, str]]:
    """The rows of :data:`COMMANDS` whose module exists (found without importing it)."""
    return [row for row in COMMANDS if importlib.util.find_spec(f"{PACKAGE}.{row[1]}") is not None]


def command_module(module: str):
    return importlib.import_module(f"{PACKAGE}.{module}")


def help_texts(module) -> tuple[str, str | None]:
    """(description, epilog) from a command module's docstring: the text before ``examples:``
    and the ``examples:`` section itself."""
    doc = (module.__doc__ or "").strip("\n")
    description, marker, examples = doc.partition("\nexamples:\n")
    return description.strip(), (f"examples:\n{examples.rstrip()}" if marker else None)


def add_command(sub, name: str, module_name: str, help_text: str, *, full: bool) -> argparse.ArgumentParser:
    """Register one sub-command; with ``full``, import its module and add its arguments."""
    if not full:
        return sub.add_parser(name, help=help_text)
    module = command_module(module_name)
    description, epilog = help_texts(module)
    parser = sub.add_parser(name, help=help_text, description=description or help_text, epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    parser.set_defaults(command_run=module.run)
    return parser


def build_parser(command: str | None = None, *, all_commands: bool = False) -> argparse.ArgumentParser:
    """The ``lrp-onnx`` parser; only ``command``'s module (or, with ``all_commands``, every
    module) is imported to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="lrp-onnx",
        description="Layer-wise Relevance Propagation for ONNX models, compiled into ONNX.",
        epilog="Run 'lrp-onnx COMMAND --help' for a command's options and an example.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in available_commands():
        add_command(sub, name, module_name, help_text, full=all_commands or name == command)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The sub-command named in ``argv``: its first word that is not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


def _version() -> str:
    from .. import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "command_run", None):
        parser.print_help()
        return 2
    try:
        return int(args.command_run(args) or 0)
    except LRPError as exc:
        return _fail(str(exc))
    except OSError as exc:  # the machine's, not the program's: no permission, disk full, ...
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or ' '.join(str(exc).split()) or type(exc).__name__}")
    except MemoryError:
        return _fail("out of memory")
    except KeyboardInterrupt:
        print("lrp-onnx: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    print(f"lrp-onnx: error: {printable(message)}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

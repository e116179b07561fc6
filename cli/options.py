"""Options shared by the commands that compile or run explainers, and text fit for a terminal.

The composite a command uses is chosen in one place: :func:`resolve_composite`, which
takes ``--composite`` or else :func:`lrp_onnx.runtime.metadata.default_composite` of the
model's metadata (its recommended composite, else ``epsilon``), then applies
``--epsilon`` / ``--gamma`` / ``--bounds`` after checking them with the rules' own limits
and checking that the composite has a rule that uses each of them.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from ..lrp_graph import Composite, get_composite, preset_names
from ..lrp_graph.errors import InputError, ModelError
from ..runtime.metadata import ModelMetadata, default_composite, read_metadata


def add_composite_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rules")
    group.add_argument("--composite", default=None, metavar="NAME|FILE",
                       help=f"preset ({', '.join(preset_names())}) or a JSON/YAML composite file "
                            "(default: the model's recommended composite, else epsilon)")
    group.add_argument("--epsilon", type=float, default=None, metavar="F",
                       help="epsilon of the composite's epsilon rules and of the LSTM/GRU gate rules (>= 0)")
    group.add_argument("--gamma", type=float, default=None, metavar="F",
                       help="gamma of the composite's gamma rules (>= 0)")
    group.add_argument("--bounds", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help="input bounds of the composite's z-box rule (LOW < HIGH)")


def add_model_output_args(parser: argparse.ArgumentParser, *, direction: bool = True) -> None:
    """``--model-output NAME`` (the explained output) and, with ``direction``, ``--direction VECTOR.npy``."""
    group = parser.add_argument_group("explained output")
    group.add_argument("--model-output", default=None, metavar="NAME",
                       help="the model output to explain (default: the first); an output of any rank "
                            "(N, d1, d2, ...) is flattened to (N, K) scores in row-major order (-o stays "
                            "the file written); a final Softmax, LogSoftmax or Sigmoid is stripped and the "
                            "scores before it are explained")
    if direction:
        group.add_argument("--direction", default=None, metavar="VECTOR.npy",
                           help="explain the one score w . y per sample, w a 1-D vector of length K (e.g. an "
                                "enrolled speaker's embedding, for the similarity of an embedding model's output); "
                                "y is the explained output before a final Softmax, LogSoftmax or Sigmoid (the "
                                "scores they squash)")


def load_direction(args):
    """The ``--direction`` vector w as loaded (a .npy array), or None; the compiler checks it
    (:func:`lrp_onnx.lrp_graph.interface.check_direction`)."""
    path = getattr(args, "direction", None)
    if path is None:
        return None
    from ..runtime.io import load_npy

    return load_npy(path)


def model_metadata(path: str | os.PathLike) -> ModelMetadata:
    """The validated lrp-onnx metadata of the model file at ``path``."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, not an ONNX file")
    return read_metadata(path)


def resolve_composite(args, metadata: ModelMetadata | None) -> Composite:
    """The composite for ``args`` (``--composite``, else the model's default) with the
    checked ``--epsilon`` / ``--gamma`` / ``--bounds`` applied (for ``compile`` and
    ``check``, which work on the model file without an :class:`Explainer`)."""
    params = checked_params(args)
    composite = get_composite(args.composite or default_composite(metadata))
    check_params_used(composite, params)
    return composite.with_params(**params) if params else composite


def explainer_options(args) -> dict:
    """``composite``, ``epsilon``, ``gamma``, ``bounds`` for :class:`~lrp_onnx.runtime.Explainer`
    (whose default composite is :func:`default_composite` of the model's metadata); check the
    result with :func:`check_params_used`."""
    return {"composite": args.composite, **checked_params(args)}


def check_params_used(composite: Composite, params: dict) -> None:
    """Refuse a parameter option that no rule of ``composite`` would use."""
    unused = [name for name in ("epsilon", "gamma", "bounds") if name in params and not uses_param(composite, name)]
    if unused:
        raise InputError(f"{' and '.join('--' + u for u in unused)} would have no effect: composite "
                         f"'{composite.name}' has no {' or '.join(_RULE_OF[u] for u in unused)} rule; choose "
                         "a composite that has one (--composite), or leave the option out")


#: the rule each parameter belongs to (for messages)
_RULE_OF = {"epsilon": "epsilon", "gamma": "gamma", "bounds": "z-box"}


def checked_params(args) -> dict:
    """The given ``--epsilon`` / ``--gamma`` / ``--bounds``, refused as a composite file's
    rule would refuse them: finite numbers, epsilon and gamma >= 0, LOW < HIGH."""
    params = {}
    for name in ("epsilon", "gamma"):
        value = getattr(args, name, None)
        if value is None:
            continue
        if not math.isfinite(value) or value < 0:
            raise InputError(f"--{name} must be a finite number >= 0, got {value}")
        params[name] = float(value)
    bounds = getattr(args, "bounds", None)
    if bounds is not None:
        low, high = (float(b) for b in bounds)
        if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
            raise InputError(f"--bounds must be two finite numbers LOW < HIGH, got {low} {high}")
        params["bounds"] = (low, high)
    return params


def uses_param(composite: Composite, name: str) -> bool:
    """True if ``composite`` has a rule whose parameter ``name`` :meth:`Composite.with_params` sets."""
    from ..lrp_graph.rules.linear import Epsilon, Gamma, ZBox

    rules = [entry.rule for entry in composite.rules] + [composite.default]
    if name == "epsilon":
        return any(type(rule) is Epsilon for rule in rules)
    kind = {"gamma": Gamma, "bounds": ZBox}[name]
    return any(isinstance(rule, kind) for rule in rules)


def printable(text: str) -> str:
    """``text`` with control characters (terminal escape codes, newlines) shown escaped, so that
    what a model or a file supplies prints as one inert line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))


def add_output_arg(parser: argparse.ArgumentParser, metavar: str, help_text: str, *, required: bool = False,
                   dest: str = "output") -> None:
    """``-o/--output``: the option of every command that writes a file or folder."""
    parser.add_argument("-o", "--output", dest=dest, metavar=metavar, required=required, help=help_text)


def legacy_output(args, what: str) -> None:
    """``OUT_DIR`` given the old way, as a positional argument (``args.legacy_out_dir``): moved
    to ``args.out_dir``, where ``-o`` puts it; one of the two is required."""
    if args.legacy_out_dir is not None:
        if args.out_dir is not None:
            raise InputError("give OUT_DIR once: -o OUT_DIR")
        args.out_dir = args.legacy_out_dir
    if args.out_dir is None:
        raise InputError(f"{what} needs -o OUT_DIR")

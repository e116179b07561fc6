"""Options shared by the sub-commands that compile or run explainers."""
from __future__ import annotations

import argparse

from ..lrp_graph import preset_names


def add_composite_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rules")
    group.add_argument("--composite", default=None, metavar="NAME|FILE",
                       help=f"preset ({', '.join(preset_names())}) or a JSON/YAML composite file "
                            "(default: the model's recommended composite, else epsilon)")
    group.add_argument("--epsilon", type=float, default=None, metavar="F", help="epsilon of the epsilon rules")
    group.add_argument("--gamma", type=float, default=None, metavar="F", help="gamma of the gamma rules")
    group.add_argument("--bounds", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help="input bounds for the z-box rule")


def composite_kwargs(args, metadata: dict | None = None) -> dict:
    composite = args.composite or (metadata or {}).get("lrp_onnx.composite") or "epsilon"
    return dict(composite=composite, epsilon=args.epsilon, gamma=args.gamma,
                bounds=tuple(args.bounds) if args.bounds else None)


def model_metadata(path) -> dict:
    """The metadata_props of an ONNX file, without loading its weights; {} if unreadable."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return {}
    return {p.key: p.value for p in model.metadata_props}

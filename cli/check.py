"""Show the plan for a model without running it: the rule every node gets, and the nodes no rule
supports (exit code 2 when there are any).

examples:
  lrp-onnx check models/gender_alexnet.onnx
  lrp-onnx check models/gender_alexnet.onnx --composite epsilon-plus --json
  lrp-onnx check model.onnx --model-output scores
"""
from __future__ import annotations

import json

from ..lrp_graph import plan_model
from ..lrp_graph.precision import source_precision
from ..lrp_graph.errors import UnsupportedOperatorError
from .options import (
    add_composite_args,
    add_model_output_args,
    model_metadata,
    printable,
    resolve_composite,
)


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx")
    add_composite_args(parser)
    add_model_output_args(parser, direction=False)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args) -> int:
    composite = resolve_composite(args, model_metadata(args.model))
    plan = plan_model(args.model, composite, output=args.model_output)
    rows = plan.rows()
    if args.json:
        print(json.dumps({"composite": plan.composite.name, "explained_output": plan.logits,
                          "stripped": plan.stripped, "source_precision": source_precision(plan.graph.model),
                          "nodes": rows}, indent=2))
    else:
        _print_table(plan, rows)
    problems = plan.problems
    if problems:
        raise UnsupportedOperatorError(
            f"{len(problems)} unsupported node(s): " + ", ".join(f"{s.op_type} '{s.name}'" for s in problems)
        )
    return 0


def _print_table(plan, rows: list[dict]) -> None:
    """node, op, rule, status, and the inputs relevance flows into (the others are held constant)."""
    rows = [{**{k: printable(v) for k, v in r.items() if k != "relevance_to"},
             "relevance_to": printable(", ".join(r.get("relevance_to", [])) or "-")} for r in rows]
    keys, titles = ("node", "op_type", "rule", "status"), {"node": "node", "op_type": "op", "rule": "rule",
                                                            "status": "status"}
    widths = {k: min(60, max(len(str(r[k])) for r in rows + [titles])) for k in keys}
    stripped = f" (the scores before the final {plan.stripped})" if plan.stripped else ""
    print(f"composite: {printable(plan.composite.name)}; explained output: {printable(plan.logits)}{stripped}")
    if source_precision(plan.graph.model):
        print(f"the model computes in {printable(source_precision(plan.graph.model))}: explained as its float32 "
              "conversion")
    print("  ".join(f"{titles[k]:<{widths[k]}}" for k in keys) + "  relevance to")
    for r in rows:
        print("  ".join(f"{str(r[k])[:60]:<{widths[k]}}" for k in keys) + f"  {r['relevance_to'][:120]}")

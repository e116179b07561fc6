"""``lrp-onnx check MODEL.onnx``: the plan without running it."""
from __future__ import annotations

import json

from ..lrp_graph import plan_model
from ..lrp_graph.errors import UnsupportedOperatorError

from .options import add_composite_args, composite_kwargs, model_metadata


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="show which rule every node gets; mark unsupported nodes")
    p.add_argument("model", metavar="MODEL.onnx")
    add_composite_args(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    kwargs = composite_kwargs(args, model_metadata(args.model))
    plan = plan_model(args.model, **kwargs)
    rows = plan.rows()
    if args.json:
        print(json.dumps({"composite": plan.composite.name, "explained_output": plan.logits, "nodes": rows},
                         indent=2))
    else:
        widths = [max(len(str(r[k])) for r in rows + [{"node": "node", "op_type": "op", "rule": "rule"}])
                  for k in ("node", "op_type", "rule")]
        widths = [min(w, 60) for w in widths]
        print(f"composite: {plan.composite.name}; explained output: {plan.logits}")
        print(f"{'node':<{widths[0]}}  {'op':<{widths[1]}}  {'rule':<{widths[2]}}  status")
        for r in rows:
            print(f"{r['node'][:60]:<{widths[0]}}  {r['op_type']:<{widths[1]}}  {r['rule'][:60]:<{widths[2]}}  "
                  f"{r['status']}")
    problems = plan.problems
    if problems:
        raise UnsupportedOperatorError(
            f"{len(problems)} unsupported node(s): " + ", ".join(f"{s.op_type} '{s.name}'" for s in problems)
        )
    return 0

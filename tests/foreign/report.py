"""Print the catalogue as a Markdown table (for tests/foreign/README.md): file, source, licence, opset,
input and output shapes, trained or not, and for trained models the faithfulness numbers.

    cd tests && python -m foreign.report
"""
from __future__ import annotations

import time
from pathlib import Path

import onnx
from lrp_onnx.runtime import Explainer

from .catalogue import CATALOGUE
from .faithfulness import faithfulness


def _shape(value) -> str:
    dims = [d.dim_param or str(d.dim_value) if (d.dim_param or d.dim_value) else "?" for d in
            value.type.tensor_type.shape.dim]
    return "x".join(dims)


def row(entry) -> str:
    model = entry.model()
    proto = onnx.load(str(model)) if isinstance(model, Path) else model
    opset = next(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx"))
    inits = {t.name for t in proto.graph.initializer}
    x_in = next(i for i in proto.graph.input if i.name not in inits)
    out = next(o for o in proto.graph.output if o.name == (entry.output or proto.graph.output[0].name))
    faithful = "-"
    start = time.perf_counter()
    ex = Explainer(model if isinstance(model, Path) else proto, composite="epsilon", cache=False)
    if entry.trained:
        f = faithfulness(ex, entry.inputs())
        faithful = f"{f.score:.3g} / {f.lrp_drop:.3g} / {f.random_drop:.3g}"
    else:
        ex.explain(entry.inputs())
    seconds = time.perf_counter() - start
    return (f"| {entry.name} | {entry.source} | `{entry.origin}` | {entry.licence} | {opset} | {_shape(x_in)} | "
            f"{_shape(out)} | {'yes' if entry.trained else 'no'} | {faithful} | {seconds:.1f} |")


def main() -> None:
    print("| model | source | file | licence | opset | input | output | trained | score / drop LRP 2 % / "
          "drop random 2 % | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for entry in CATALOGUE:
        print(row(entry), flush=True)


if __name__ == "__main__":
    main()

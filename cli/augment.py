"""LRP-guided augmentation: in each input of DATA, set the top FRACTION most relevant bins
(relevance for the true label) to the mean of their Moore neighbourhood (the 8 surrounding bins;
5 on an edge, 3 in a corner) and write the result as an .npz of x, y and labels that
lrp-onnx train reads; then continue training on it.

examples:
  lrp-onnx augment models/gender_alexnet.onnx train.npz -o augmented.npz --fraction 0.005
  lrp-onnx train alexnet --data augmented.npz --task gender --init runs/gender -o runs/gender-augmented
"""
from __future__ import annotations

import sys

from .flip import DATA_HELP, check_output
from .options import (
    add_composite_args,
    add_output_arg,
    check_params_used,
    explainer_options,
    printable,
)


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("data", metavar="DATA", help=DATA_HELP)
    add_output_arg(p, "AUGMENTED.npz", "the augmented dataset to write", required=True)
    p.add_argument("--fraction", type=float, default=0.005,
                   help="fraction of each input's bins to replace, in (0, 1) (default 0.005 = 0.5 %%)")
    add_composite_args(p)
    p.add_argument("--val", metavar="DATA", help="also store this DATA unchanged as x_val/y_val (validation)")
    p.add_argument("--test", metavar="DATA", help="also store this DATA unchanged as x_test/y_test")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="augment a class-balanced, seeded subset of N samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    import numpy as np

    from ..runtime.augment import check_fraction, write_augmented
    from ..runtime.explainer import Explainer
    from ..runtime.inputs import open_data

    fraction = check_fraction(args.fraction)
    output = check_output(args.output, (".npz",), "-o")
    options = explainer_options(args)
    explainer = Explainer(args.model, threads=args.threads, **options)
    check_params_used(explainer.composite, options)
    data = open_data(args.data, explainer, limit=args.limit, seed=args.seed)
    extra = {name: open_data(source, explainer) for name, source in (("val", args.val), ("test", args.test))
             if source}
    info = write_augmented(output, explainer, data, fraction, extra=extra, progress=not args.no_progress)
    print(f"wrote {printable(output)}: {info['samples']} inputs, {info['bins_per_sample']} bins each set to their "
          f"Moore mean ({fraction:g} of {int(np.prod(data.input_shape))})"
          + "".join(f", {info[f'{k}_samples']} {k} inputs" for k in extra))
    print(f"continue training with: lrp-onnx train ARCH --data {output} --task TASK --init RUN_DIR -o NEW_RUN_DIR",
          file=sys.stderr)
    return 0

"""Max-pool relevance routing without ``MaxPool``'s ``Indices`` output or ``ScatterElements``.

Winner takes all per window, and the windows' contributions add up where windows overlap
(autograd's semantics, so Zennit's): ``R_x[i] = sum over windows w whose first maximum is
at i of R_y[w]``. Computed with operators every onnxruntime backend has, WebGPU included
(its ``MaxPool`` has no ``Indices``):

1. the windows' values: a ``Conv`` of each channel of ``x`` (padded with a very negative
   value where the pool pads) with one-hot kernels, one output channel per window position,
   giving ``(N * C, K, *out)`` for ``K`` positions per window; exact, as each output is one
   product with 1 plus products with 0;
2. the winner: ``ArgMax`` over the ``K`` positions (its first maximum, as the forward
   max-pool of torch and onnxruntime picks it);
3. the scatter: the winner's flat position in the (padded) input, ``start(window) + offset(k)``
   (a ``Gather`` from the ``K`` offsets and two ``Add`` on the ``(N * C, *out)`` winners), and a ``ScatterND``
   with ``reduction="add"`` of ``R_y`` into zeros at those positions (overlapping windows add
   up); the pool's padding is cut off afterwards.

Global max-pools are the case of one window over the whole spatial extent: ``ArgMax``
over the flattened positions and an ``Equal`` against their range.
"""
from __future__ import annotations

import math

import numpy as np
from onnx import helper

#: what the pool's padding holds in the windows' values: below every finite float32 input,
#: and finite so that a product with a kernel's 0 stays 0
PAD_VALUE = -3.0e38


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def static_pool_shapes(graph, node):
    """(x_shape, y_shape) when channels and spatial sizes are static, else None."""
    x_shape, y_shape = graph.shape(node.input[0]), graph.shape(node.output[0])
    if x_shape is None or y_shape is None or None in x_shape[1:] or None in y_shape[1:]:
        return None
    return x_shape, y_shape


def pool_geometry(node, x_shape, y_shape):
    """Kernel, strides, dilations and the (begin, end) padding per spatial axis under which a
    plain (floor-mode, explicit-pad) sliding window yields exactly ``y_shape``."""
    attrs = _attrs(node)
    kernel = [int(k) for k in attrs["kernel_shape"]]
    n = len(kernel)
    strides = [int(s) for s in attrs.get("strides", [1] * n)]
    dilations = [int(d) for d in attrs.get("dilations", [1] * n)]
    pads = [int(p) for p in attrs.get("pads", [0] * (2 * n))]
    auto_pad = _text(attrs.get("auto_pad", "NOTSET"))
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        from ..layers import _same_pads

        pads = _same_pads(x_shape[2:], y_shape[2:], kernel, strides, dilations, auto_pad == "SAME_UPPER")
    elif auto_pad == "VALID":
        pads = [0] * (2 * n)
    begins, ends = pads[:n], pads[n:]
    for i in range(n):  # ceil_mode: the last window may reach past the end padding
        span = (y_shape[2 + i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
        ends[i] = max(ends[i], span - x_shape[2 + i] - begins[i])
    return kernel, strides, dilations, begins, ends


def one_hot_kernels(kernel: list[int]) -> np.ndarray:
    """(K, 1, *kernel): output channel ``k`` picks window position ``k`` (row-major)."""
    positions = math.prod(kernel)
    return np.eye(positions, dtype=np.float32).reshape((positions, 1, *kernel))


def route_max_pool(b, node, graph, relevance: str) -> str:
    """Relevance of the max-pool's input ``x`` from the relevance of its output.

    Channels are moved to the batch axis, ``(N * C, 1, *spatial)``, so that the window
    Conv is a plain one-input-channel convolution (onnxruntime-web's WebGPU backend computed
    a grouped Conv with several outputs per group wrongly)."""
    x_shape, y_shape = static_pool_shapes(graph, node)
    kernel, strides, dilations, begins, ends = pool_geometry(node, x_shape, y_shape)
    channels, x_space, y_space = x_shape[1], list(x_shape[2:]), list(y_shape[2:])
    padded = [begin + size + end for begin, size, end in zip(begins, x_space, ends)]
    x = b.op("Reshape", [node.input[0], b.ints([-1, 1] + x_space)])
    if any(begins) or any(ends):
        pad_spec = [0, 0] + begins + [0, 0] + ends
        x = b.op("Pad", [x, b.ints(pad_spec), b.const(np.float32(PAD_VALUE), hint="pad_value")])
    weights = b.const(one_hot_kernels(kernel), hint="window_positions")
    conv = {"kernel_shape": kernel, "strides": strides, "dilations": dilations}
    values = b.op("Conv", [x, weights], hint="window_values", **conv)  # (N * C, K, *out)
    winner = b.op("ArgMax", [values], axis=1, keepdims=0)  # (N * C, *out)
    starts = b.const(_window_starts(y_space, strides, padded), dtype=np.int64, hint="window_starts")
    offsets = b.const(_offsets(kernel, dilations, padded), dtype=np.int64, hint="window_offsets")
    offset = b.op("Add", [b.op("Gather", [offsets, winner]), starts])
    plane = math.prod(padded)
    size = b.op("Mul", [b.op("Slice", [b.shape_of(x), b.ints([0]), b.ints([1])]), b.ints([plane])])  # N * C * plane
    plane_starts = b.op("Range", [b.ints(0), b.op("Squeeze", [size]), b.ints(plane)])  # j * plane, j < N * C
    flat = b.op("Add", [offset, b.op("Reshape", [plane_starts, b.ints([-1] + [1] * len(kernel))])])
    zeros = b.op("ConstantOfShape", [size], value=helper.make_tensor("zero", 1, [1], [0.0]))
    r_y = b.op("Reshape", [relevance, b.ints([-1] + y_space)])
    routed = b.op("ScatterND", [zeros, b.op("Unsqueeze", [flat, b.ints([-1])]), r_y], hint="routed", reduction="add")
    routed = b.op("Reshape", [routed, b.ints([-1] + padded)])
    if any(begins) or any(ends):
        n = len(kernel)
        routed = b.op("Slice", [routed, b.ints(begins), b.ints([p + s for p, s in zip(begins, x_space)]),
                                b.ints(list(range(1, n + 1)))])
    return b.op("Reshape", [routed, b.ints([-1, channels] + x_space)])


def _window_starts(y_space: list[int], strides: list[int], padded: list[int]) -> np.ndarray:
    """``(*out)``: the flat position in the padded input of each window's first element."""
    place = [math.prod(padded[i + 1:]) for i in range(len(padded))]
    grids = np.meshgrid(*[np.arange(o, dtype=np.int64) * s * p for o, s, p in zip(y_space, strides, place)],
                        indexing="ij")
    return sum(grids)


def _offsets(kernel: list[int], dilations: list[int], padded: list[int]) -> np.ndarray:
    """``(K,)``: the flat offset in the padded input of each window position (row-major) from the window's start."""
    place = [math.prod(padded[i + 1:]) for i in range(len(padded))]
    grids = np.meshgrid(*[np.arange(k, dtype=np.int64) * d * p for k, d, p in zip(kernel, dilations, place)],
                        indexing="ij")
    return sum(grids).reshape(-1)


def route_global_max_pool(b, node, graph, relevance: str) -> str:
    """Relevance of a global max-pool's input: each channel's relevance to its first maximum."""
    x = node.input[0]
    x3 = b.op("Reshape", [x, b.ints([0, 0, -1])])
    winner = b.op("ArgMax", [x3], axis=2, keepdims=1)
    shape = graph.shape(x)
    if shape is not None and None not in shape[2:]:
        positions = b.const(np.arange(math.prod(shape[2:])).reshape(1, 1, -1), dtype=np.int64, hint="positions")
    else:
        count = b.op("Slice", [b.shape_of(x3), b.ints([2]), b.ints([3])])
        positions = b.op("Reshape", [b.op("Range", [b.ints(0), b.op("Squeeze", [count]), b.ints(1)]),
                                     b.ints([1, 1, -1])])
    is_winner = b.op("Cast", [b.op("Equal", [winner, positions])], to=1)
    routed = b.mul(is_winner, b.op("Reshape", [relevance, b.ints([0, 0, 1])]))
    return b.reshape_like(routed, x)

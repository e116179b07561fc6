"""Emits the ONNX nodes of the relevance computation.

Rules call small methods (``b.mul(x, y)``, ``b.op("ConvTranspose", ...)``) and get
value names back; the builder picks unique names, stores constants as
initializers and keeps the nodes in emission order, which is a valid
topological order because every rule only reads values that already exist.
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper


class Builder:
    def __init__(self, prefix: str = "lrp", taken: set[str] | None = None):
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._taken = set(taken or ())
        self._counter = itertools.count()
        self._const_cache: dict[tuple, str] = {}
        #: value -> values it is known to vanish with: 0 (or NaN) wherever they are 0 (products, sums of them)
        self._factors: dict[str, frozenset[str]] = {}
        self._products: dict[str, tuple[str, str]] = {}  # Mul output -> its two operands
        self._aligned: set[str] = set()  # products whose operands both have the product's shape
        self.scope = ""

    # -- names and constants ---------------------------------------------------------------------
    def fresh(self, hint: str = "t") -> str:
        while True:
            name = f"{self.prefix}/{self.scope}{hint}_{next(self._counter)}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def const(self, value, dtype=np.float32, hint: str = "c") -> str:
        """A constant tensor; small ones are de-duplicated."""
        array = np.asarray(value, dtype=dtype)
        key = None
        if array.size <= 16:
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in self._const_cache:
                return self._const_cache[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            self._const_cache[key] = name
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(values, dtype=np.int64), dtype=np.int64, hint="i")

    # -- nodes -----------------------------------------------------------------------------------
    def op(self, op_type: str, inputs: list[str], n_out: int = 1, hint: str | None = None, **attrs):
        outputs = [self.fresh(hint or op_type.lower()) for _ in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=outputs[0], **attrs))
        return outputs[0] if n_out == 1 else outputs

    def add(self, a: str, b: str) -> str:
        return self.op("Add", [a, b])

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", [a, b])

    def mul(self, a: str, b: str, aligned: bool = False) -> str:
        """``a * b``; ``aligned``: both have the product's shape (no broadcasting), as a relevance ``x * c`` that a
        rule made with ``c`` shaped like ``x``."""
        out = self.op("Mul", [a, b])
        self._products[out] = (a, b)
        self._factors[out] = frozenset((a, b)) | self._factors.get(a, frozenset()) | self._factors.get(b, frozenset())
        if aligned:
            self._aligned.add(out)
        return out

    def cofactor(self, x: str, factor: str) -> str | None:
        """``t`` if ``x`` was built as ``factor * t`` (or ``t * factor``), else None."""
        a, t = self._products.get(x, (None, None))
        return t if a == factor else a if t == factor else None

    def declare_aligned(self, product: str) -> str:
        """Record that ``product`` (made by :meth:`mul`) turned out aligned; returns it."""
        if product in self._products:
            self._aligned.add(product)
        return product

    def aligned_cofactor(self, x: str, factor: str) -> str | None:
        """:meth:`cofactor`, for an aligned product only: a ``t`` that a reshape or transpose of ``factor`` can move
        along (``reshape(y * t) = reshape(y) * reshape(t)``)."""
        return self.cofactor(x, factor) if x in self._aligned else None

    def vanishes_with(self, x: str, factor: str) -> bool:
        """Whether ``x`` was built as ``factor`` times something (or a sum of such): 0 (or NaN) where ``factor`` is 0."""
        return factor in self._factors.get(x, ())

    def div(self, a: str, b: str) -> str:
        return self.op("Div", [a, b])

    def neg(self, a: str) -> str:
        return self.op("Neg", [a])

    def positive(self, x: str) -> str:
        """max(x, 0)"""
        return self.op("Relu", [x])

    def negative(self, x: str) -> str:
        """min(x, 0)"""
        return self.op("Min", [x, self.const(0.0)])

    def sum(self, terms: list[str]) -> str:
        terms = [t for t in terms if t is not None]
        if len(terms) == 1:
            return terms[0]
        out = self.op("Sum", terms)
        self._factors[out] = frozenset.intersection(*(self._factors.get(t, frozenset()) for t in terms))
        return out

    def shape_of(self, x: str) -> str:
        return self.op("Shape", [x])

    def reshape_like(self, x: str, like: str) -> str:
        return self.op("Reshape", [x, self.shape_of(like)])

    def zeros_like(self, like: str) -> str:
        return self.op(
            "ConstantOfShape", [self.shape_of(like)], value=numpy_helper.from_array(np.zeros(1, np.float32))
        )

    def mask(self, condition: str) -> str:
        """A boolean tensor as float 1/0 (multiplying by it is much faster on onnxruntime's CPU than
        a ``Where`` with tensor operands)."""
        return self.op("Cast", [condition], to=onnx.TensorProto.FLOAT)

    def nonzero(self, x: str) -> str:
        """``[x != 0]`` as float 1/0 (a float cast to bool is ``x != 0``)."""
        return self.mask(self.op("Cast", [x], to=onnx.TensorProto.BOOL, hint="nonzero"))

    def stabilize(self, z: str, epsilon: float) -> str:
        """z + epsilon * sign(z), with sign(0) = +1 (Zennit's stabiliser), exactly:
        ``[z >= 0] * 2 epsilon - epsilon`` is +-epsilon without rounding."""
        nonnegative = self.mask(self.op("GreaterOrEqual", [z, self.const(0.0)]))
        return self.add(z, self.sub(self.mul(nonnegative, self.const(2.0 * epsilon)), self.const(epsilon)))

    def safe_divide(self, numerator: str, denominator: str, epsilon: float, rectified: str | None = None) -> str:
        """numerator / stabilize(denominator); with epsilon = 0, x / 0 is taken as 0
        (divided by 1 there, then multiplied by 0).

        ``rectified``: the model's ``max(denominator, 0)``. Where the numerator is known to vanish with it
        (:meth:`vanishes_with`), only ``denominator > 0`` counts, where ``stab(denominator) = rectified + epsilon``
        exactly: one Add and one Div (elsewhere ``0 / epsilon = 0``, or ``0 / 1`` for epsilon = 0; with epsilon = 0
        and a numerator ``rectified * t``, just ``t [rectified != 0]``). Where the
        numerator vanishes with the denominator itself, ``sign(z) numerator / (|z| + epsilon)`` (no mask), and for
        a numerator ``z * t``, ``|z| t / (|z| + epsilon)``, or ``t [z != 0]`` with epsilon = 0 (the product ``z * t``
        itself is then not read here)."""
        if rectified is not None and self.vanishes_with(numerator, rectified):
            if epsilon == 0 and self.cofactor(numerator, rectified) is not None:  # r t / r = t where r != 0
                return self.mul(self.cofactor(numerator, rectified), self.nonzero(rectified))
            shift = self.const(epsilon) if epsilon > 0 else self.mask(self.op("Equal", [rectified, self.const(0.0)]))
            return self.div(numerator, self.add(rectified, shift))
        if epsilon > 0 and self.vanishes_with(numerator, denominator):  # stab(z) = sign(z) (|z| + epsilon)
            magnitude = self.op("Abs", [denominator])
            t = self.cofactor(numerator, denominator)
            if t is not None:  # numerator = z * t: sign(z) * numerator = |z| * t
                signed = self.mul(magnitude, t)
            else:  # sign(0) = 0 only where the numerator is 0
                signed = self.mul(numerator, self.op("Sign", [denominator]))
            return self.div(signed, self.add(magnitude, self.const(epsilon)))
        if epsilon > 0:
            return self.div(numerator, self.stabilize(denominator, epsilon))
        if self.cofactor(numerator, denominator) is not None:  # z t / z = t where z != 0
            return self.mul(self.cofactor(numerator, denominator), self.nonzero(denominator))
        is_zero = self.mask(self.op("Equal", [denominator, self.const(0.0)]))
        quotient = self.div(numerator, self.add(denominator, is_zero))
        return self.mul(quotient, self.sub(self.const(1.0), is_zero))

    def reduce_sum_to(self, x: str, x_shape: tuple, target_shape: tuple) -> str:
        """Sum ``x`` over the axes along which ``target_shape`` was broadcast to ``x_shape``."""
        if tuple(x_shape) == tuple(target_shape):
            return x
        rank = len(x_shape)
        padded = (1,) * (rank - len(target_shape)) + tuple(target_shape)
        axes = [i for i, (a, t) in enumerate(zip(x_shape, padded)) if t == 1 and a != 1]
        out = self.op("ReduceSum", [x, self.ints(axes)], keepdims=1) if axes else x
        if len(target_shape) != rank:
            out = self.op("Reshape", [out, self.ints(list(target_shape))])
        return out

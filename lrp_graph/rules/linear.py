"""LRP rules for linear layers ``z_j = sum_i x_i w_ij + b_j``, with Zennit's semantics.

Every rule returns the input relevance ``R_i`` given the output relevance ``R_j``.
Notation: ``x+ = max(x, 0)``, ``x- = min(x, 0)``, likewise ``w+``, ``w-``, ``b+``, ``b-``;
``stab(z) = z + eps * sign(z)`` with ``sign(0) = +1``; the bias is part of ``z``.
A rule computes each sum as the layer's forward pass with modified parameters and
each ``sum_j w_ij s_j`` as the layer's transposed pass (``layer.gradient``).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..builder import Builder
from ..layers import Layer


def pos(a):
    return None if a is None else np.maximum(a, 0)


def neg(a):
    return None if a is None else np.minimum(a, 0)


class LinearRule(BaseModel):
    """A rule for linear layers: a small immutable, serialisable object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def relevance(self, b: Builder, layer: Layer, x: str, R: str, nonnegative: bool = False) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.model_dump(exclude={"name"}).items())
        return f"{self.name}({params})" if params else self.name


class Epsilon(LinearRule):
    """LRP-epsilon: ``R_i = x_i * sum_j w_ij R_j / stab(z_j)``. ``epsilon = 0`` is LRP-0
    (then ``R_j / 0`` is taken as 0)."""

    name: Literal["epsilon"] = "epsilon"
    epsilon: float = Field(1e-6, ge=0)

    def relevance(self, b, layer, x, R, nonnegative=False):
        s = b.safe_divide(R, layer.z, self.epsilon, rectified=layer.rectified())
        return b.mul(x, layer.gradient(b, s, layer.weight), aligned=True)


class Zero(Epsilon):
    """LRP-0: ``R_i = x_i * sum_j w_ij R_j / z_j`` (epsilon = 0, ``R_j / 0`` taken as 0)."""

    name: Literal["lrp0"] = "lrp0"
    epsilon: float = Field(0.0, ge=0, le=0)

    def describe(self) -> str:
        return "lrp0"


class Gamma(LinearRule):
    """Generalised LRP-gamma (Zennit's ``Gamma``), for inputs of either sign:
    with ``W^+ = w + gamma w+``, ``W^- = w + gamma w-`` (biases likewise),
    ``R_i = x+_i sum_j (W^+_ij s+_j + W^-_ij s-_j) + x-_i sum_j (W^-_ij s+_j + W^+_ij s-_j)``,
    ``s+_j = [z_j > 0] R_j / stab(z+_j)``, ``z+ = W^+ x+ + W^- x- + b^+``,
    ``s-_j = [z_j < 0] R_j / stab(z-_j)``, ``z- = W^- x+ + W^+ x- + b^-``."""

    name: Literal["gamma"] = "gamma"
    gamma: float = Field(0.25, ge=0)
    stabilizer: float = Field(1e-6, ge=0)

    def relevance(self, b, layer, x, R, nonnegative=False):
        if nonnegative:
            return self._nonnegative(b, layer, x, R)
        g = self.gamma
        w, bias = layer.weight, layer.bias
        w_up, w_down = w + g * pos(w), w + g * neg(w)
        b_up = None if bias is None else bias + g * pos(bias)
        b_down = None if bias is None else bias + g * neg(bias)
        xp = b.positive(x)
        xn = None if nonnegative else b.negative(x)
        z_up = [layer.forward(b, xp, w_up, b_up)]
        z_down = [layer.forward(b, xp, w_down, b_down)]
        if xn is not None:
            z_up.append(layer.forward(b, xn, w_down, None))
            z_down.append(layer.forward(b, xn, w_up, None))
        zero = b.const(0.0)
        r_up = b.mul(R, b.op("Cast", [b.op("Greater", [layer.z, zero])], to=1))
        r_down = b.mul(R, b.op("Cast", [b.op("Less", [layer.z, zero])], to=1))
        s_up = b.safe_divide(r_up, b.sum(z_up), self.stabilizer)
        s_down = b.safe_divide(r_down, b.sum(z_down), self.stabilizer)
        terms = [b.mul(xp, b.add(layer.gradient(b, s_up, w_up), layer.gradient(b, s_down, w_down)))]
        if xn is not None:
            terms.append(b.mul(xn, b.add(layer.gradient(b, s_up, w_down), layer.gradient(b, s_down, w_up))))
        return b.sum(terms)

    def _nonnegative(self, b, layer, x, R):
        """The same for ``x >= 0`` with one extra forward pass. With ``q = gamma (w+ x + b+) + stabilizer``
        (one Conv: the stabiliser is in its bias) and the layer's own output ``z = w x + b``
        (``w- = w - w+``): ``stab(z+) = z + q`` where ``z > 0``, ``stab(z-) = (1 + gamma) z - q`` where
        ``z < 0``, one denominator ``D = z + q + [z < 0] (gamma z - 2 q)`` (``q > 0`` at ``z = 0``) serves both.
        Nothing cancels much: where each is used, its terms share its sign. Masks multiply (``Cast``,
        ``Mul``), as onnxruntime's CPU ``Where`` is slow on tensors. Where the model applies a Relu to ``z``
        and ``R`` vanishes with its output ``y`` (``R = y * ...``), ``s- = 0`` and ``s+ = R / (y + q)``; where ``R``
        is the product ``z t`` (a residual sum's Norm rule), ``s+ = z+ t / (z+ + q)``, ``s- = z- t / ((1 + gamma) z- - q)``."""
        g, eps = self.gamma, self.stabilizer
        w, bias = layer.weight, layer.bias
        w_up, w_down = w + g * pos(w), w + g * neg(w)
        shift = g * pos(bias) + eps if bias is not None else np.full(1, eps, np.float32) if eps > 0 else None
        q = layer.forward(b, x, g * pos(w), shift)
        y = layer.rectified()
        if eps > 0 and y is not None and b.vanishes_with(R, y):
            # R = 0 where z <= 0: s- = 0, and s+ = R / (max(z, 0) + q) (q >= eps > 0)
            return b.mul(x, layer.gradient(b, b.div(R, b.add(y, q)), w_up))
        t = b.cofactor(R, layer.z)
        if eps > 0 and t is not None:  # R = z t: s+ = z+ t / (z+ + q), s- = z- t / ((1 + gamma) z- - q), no masks
            zp = b.positive(layer.z)
            zn = b.sub(layer.z, zp)  # = min(z, 0) exactly, and cheaper than a Min with a broadcast 0
            s_up = b.div(b.mul(zp, t), b.add(zp, q))
            s_down = b.div(b.mul(zn, t), b.sub(b.mul(zn, b.const(1.0 + g)), q))
            return b.mul(x, b.add(layer.gradient(b, s_up, w_up), layer.gradient(b, s_down, w_down)))
        z, zero = layer.z, b.const(0.0)
        up, down = b.mask(b.op("Greater", [z, zero])), b.mask(b.op("Less", [z, zero]))
        wrong_side = b.sub(b.mul(z, b.const(g)), b.mul(q, b.const(2.0)))
        denominator = b.add(b.add(z, q), b.mul(down, wrong_side))
        s = b.div(R, denominator) if eps > 0 else b.safe_divide(R, denominator, 0.0)
        s_up, s_down = b.mul(s, up), b.mul(s, down)
        return b.mul(x, b.add(layer.gradient(b, s_up, w_up), layer.gradient(b, s_down, w_down)))


class AlphaBeta(LinearRule):
    """LRP-alpha-beta: ``R_i = alpha * R+_i - beta * R-_i`` with
    ``R+_i = x+_i sum_j w+_ij s+_j + x-_i sum_j w-_ij s+_j``, ``s+ = R / stab(w+ x+ + w- x- + b+)``,
    ``R-_i = x+_i sum_j w-_ij s-_j + x-_i sum_j w+_ij s-_j``, ``s- = R / stab(w- x+ + w+ x- + b-)``;
    ``alpha - beta = 1``."""

    name: Literal["alpha-beta"] = "alpha-beta"
    alpha: float = Field(2.0, ge=0)
    beta: float = Field(1.0, ge=0)
    stabilizer: float = Field(1e-6, ge=0)

    @model_validator(mode="after")
    def _conserving(self):
        if abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise ValueError(f"alpha - beta must equal 1 (got alpha={self.alpha}, beta={self.beta})")
        return self

    def relevance(self, b, layer, x, R, nonnegative=False):
        w, bias = layer.weight, layer.bias
        wp, wn = pos(w), neg(w)
        xp = b.positive(x)
        xn = None if nonnegative else b.negative(x)

        def part(w_a, w_b, bias_a):
            z = [layer.forward(b, xp, w_a, bias_a)]
            if xn is not None:
                z.append(layer.forward(b, xn, w_b, None))
            s = b.safe_divide(R, b.sum(z), self.stabilizer)
            terms = [b.mul(xp, layer.gradient(b, s, w_a))]
            if xn is not None:
                terms.append(b.mul(xn, layer.gradient(b, s, w_b)))
            return b.sum(terms)

        relevance = part(wp, wn, pos(bias))
        if self.alpha != 1.0:
            relevance = b.mul(relevance, b.const(self.alpha))
        if self.beta == 0:
            return relevance
        negative = part(wn, wp, neg(bias))
        return b.sub(relevance, b.mul(negative, b.const(self.beta)))


class Alpha2Beta1(AlphaBeta):
    """LRP-alpha2-beta1 (alpha = 2, beta = 1)."""

    name: Literal["alpha2-beta1"] = "alpha2-beta1"
    alpha: float = Field(2.0, ge=2, le=2)
    beta: float = Field(1.0, ge=1, le=1)


class Alpha1Beta0(AlphaBeta):
    """LRP-alpha1-beta0 (alpha = 1, beta = 0): only positive contributions."""

    name: Literal["alpha1-beta0"] = "alpha1-beta0"
    alpha: float = Field(1.0, ge=1, le=1)
    beta: float = Field(0.0, ge=0, le=0)


class ZPlus(AlphaBeta):
    """LRP-z+: ``R_i = x+_i sum_j w+_ij s_j + x-_i sum_j w-_ij s_j``,
    ``s = R / stab(w+ x+ + w- x- + b+)`` (alpha = 1, beta = 0)."""

    name: Literal["z-plus"] = "z-plus"
    alpha: float = Field(1.0, ge=1, le=1)
    beta: float = Field(0.0, ge=0, le=0)


class ZBox(LinearRule):
    """LRP-z^B for inputs bounded by ``low <= x <= high``:
    ``R_i = (x_i w_ij - l_i w+_ij - h_i w-_ij) s_j`` summed over j,
    ``s = R / stab(z - (w+ l + b+) - (w- h + b-))``."""

    name: Literal["z-box"] = "z-box"
    low: float | list = -1.0
    high: float | list = 1.0
    stabilizer: float = Field(1e-6, ge=0)

    @model_validator(mode="after")
    def _bounds_in_order(self):
        try:
            low, high = np.asarray(self.low, dtype=np.float64), np.asarray(self.high, dtype=np.float64)
            ordered = bool(np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high))
        except (ValueError, TypeError):  # not numbers, or shapes that do not broadcast
            ordered = False
        if not ordered:
            raise ValueError("z-box bounds must be finite numbers (or lists of them) with low < high")
        return self

    def relevance(self, b, layer, x, R, nonnegative=False):
        w, bias = layer.weight, layer.bias
        wp, wn = pos(w), neg(w)
        shape = (1,) + tuple(layer.x_sample_shape)
        low = np.broadcast_to(_bound(self.low, shape), shape).astype(np.float32)
        high = np.broadcast_to(_bound(self.high, shape), shape).astype(np.float32)
        low_c, high_c = layer.input_constant(b, low, "low"), layer.input_constant(b, high, "high")
        z_low = layer.forward(b, low_c, wp, pos(bias))
        z_high = layer.forward(b, high_c, wn, neg(bias))
        s = b.safe_divide(R, b.sub(b.sub(layer.z, z_low), z_high), self.stabilizer)
        return b.sub(
            b.sub(b.mul(x, layer.gradient(b, s, w)), b.mul(low_c, layer.gradient(b, s, wp))),
            b.mul(high_c, layer.gradient(b, s, wn)),
        )


def _bound(value, shape) -> np.ndarray:
    """A bound given as a scalar, or per channel (a list), broadcast to ``shape`` = (1, C, ...)."""
    array = np.asarray(value, dtype=np.float32)
    if array.ndim == 1 and len(shape) > 2 and array.size == shape[1]:
        array = array.reshape((1, -1) + (1,) * (len(shape) - 2))
    return array


class Flat(LinearRule):
    """LRP-flat: relevance spread uniformly over the receptive field,
    ``R_i = sum_j R_j / stab(sum_i' 1)`` over the j that i feeds (weights 1, no bias)."""

    name: Literal["flat"] = "flat"
    stabilizer: float = Field(1e-6, ge=0)

    def relevance(self, b, layer, x, R, nonnegative=False):
        ones_w = np.ones_like(layer.weight)
        ones_x = layer.input_constant(b, np.ones((1,) + tuple(layer.x_sample_shape), np.float32), "ones")
        s = b.safe_divide(R, layer.forward(b, ones_x, ones_w, None), self.stabilizer)
        return layer.gradient(b, s, ones_w)


class WSquare(LinearRule):
    """LRP-w^2: ``R_i = sum_j w_ij^2 R_j / stab(sum_i' w_i'j^2 + b_j^2)``."""

    name: Literal["w-square"] = "w-square"
    stabilizer: float = Field(1e-6, ge=0)

    def relevance(self, b, layer, x, R, nonnegative=False):
        w2 = np.square(layer.weight)
        b2 = None if layer.bias is None else np.square(layer.bias)
        ones_x = layer.input_constant(b, np.ones((1,) + tuple(layer.x_sample_shape), np.float32), "ones")
        s = b.safe_divide(R, layer.forward(b, ones_x, w2, b2), self.stabilizer)
        return layer.gradient(b, s, w2)


LINEAR_RULES = (Epsilon, Zero, Gamma, AlphaBeta, Alpha2Beta1, Alpha1Beta0, ZPlus, ZBox, Flat, WSquare)

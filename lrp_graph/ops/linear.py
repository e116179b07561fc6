"""Linear layers in the handler registry.

* ``Conv``, ``ConvTranspose``, ``Gemm``, ``MatMul`` with a constant weight head a linear layer
  (:mod:`..layers`); its rule comes from the composite's linear-layer entries.
* ``BatchNormalization`` and ``Add``/``Sub``/``Mul``/``Div`` by constants are affine maps
  ``scale * x + shift``: after a linear layer they fold into its parameters (as Zennit's
  canonizers merge BatchNorm into the layer before it); alone, they form a per-channel
  :class:`~..layers.DiagonalLayer`.
"""
from __future__ import annotations

from ..conv_transpose import conv_transpose_head
from ..layers import affine_of, diagonal_head, linear_head
from .base import OpHandler, register_op


class LinearHead(OpHandler):
    """Conv, Gemm, MatMul: a linear layer when the weights are constants."""

    def layer(self, node, graph):
        return linear_head(node, graph)

    def unsupported(self, node, graph):
        return "weights must be constant (known at compile time), and Gemm's transA is not supported"


class AffineNode(OpHandler):
    """A node computing ``scale * x + shift`` with constant ``scale`` and ``shift``."""

    def layer(self, node, graph):
        return diagonal_head(node, graph)

    def affine(self, node, graph, carrier):
        return affine_of(node, graph, carrier)


class BatchNorm(AffineNode):
    """BatchNormalization (inference): folded into the linear layer before it, else diagonal."""

    def unsupported(self, node, graph):
        return "BatchNormalization needs constant statistics and training_mode=0"


class Scaling(AffineNode):
    """``x / c`` with a constant ``c``: a diagonal linear layer (registered for Div by :mod:`.statistics`)."""

    def unsupported(self, node, graph):
        return "Div is supported by a constant only"


class TransposedConvHead(LinearHead):
    """ConvTranspose with constant weights: a linear layer whose transposed pass is a Conv."""

    def layer(self, node, graph):
        return conv_transpose_head(node, graph)

    def unsupported(self, node, graph):
        return "ConvTranspose needs constant weights and bias"


for _op in ("Conv", "Gemm", "MatMul"):
    register_op(_op, LinearHead)
register_op("ConvTranspose", TransposedConvHead)
register_op("BatchNormalization", BatchNorm)

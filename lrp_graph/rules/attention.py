"""Rules for products of two activations and the Softmax inside a model (AttnLRP, CP-LRP).

Their handlers, with sources, are in ``lrp_graph/ops/attention.py``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .basic import NodeRule


class Uniform(NodeRule):
    """AttnLRP's uniform rule for a product of two activations: ``R_A = 1/2 A * (S B^T)``,
    ``R_B = 1/2 B * (A^T S)``, ``S = R / stab(A B)`` (with stabilizer 0, ``R / 0`` is taken as 0)."""

    name: Literal["uniform"] = "uniform"
    stabilizer: float = Field(0.0, ge=0)


class Conservative(NodeRule):
    """CP-LRP: the attention weights ``P`` (made by a Softmax) held constant, ``R_V = V * (P^T S)``,
    ``S = R / stab(P V)``; without a Softmax-made factor, as :class:`Uniform`."""

    name: Literal["conservative"] = "conservative"
    stabilizer: float = Field(0.0, ge=0)


class SoftmaxRule(NodeRule):
    """AttnLRP's softmax rule: ``R_x = x * (R - softmax(x) * sum_axis(R))``."""

    name: Literal["softmax"] = "softmax"


ATTENTION_RULES = (Uniform, Conservative, SoftmaxRule)

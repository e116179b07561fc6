"""LRP rules: small immutable objects, loadable from JSON/YAML by their ``name``."""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field, TypeAdapter

from .attention import ATTENTION_RULES, Conservative, SoftmaxRule, Uniform
from .basic import NODE_RULES, NodeRule, Norm, Pass, WinnerTakesAll
from .linear import (
    LINEAR_RULES,
    Alpha1Beta0,
    Alpha2Beta1,
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    LinearRule,
    WSquare,
    ZBox,
    Zero,
    ZPlus,
)

Rule = Annotated[Union[tuple(LINEAR_RULES + NODE_RULES + ATTENTION_RULES)], Field(discriminator="name")]
RULE_ADAPTER = TypeAdapter(Rule)


def make_rule(spec) -> LinearRule | NodeRule:
    """A rule from a dict such as ``{"name": "gamma", "gamma": 0.25}``, a name, or a rule."""
    if isinstance(spec, (LinearRule, NodeRule)):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    return RULE_ADAPTER.validate_python(spec)


__all__ = [
    "Rule", "make_rule", "LinearRule", "NodeRule", "Epsilon", "Zero", "Gamma", "AlphaBeta",
    "Alpha2Beta1", "Alpha1Beta0", "ZPlus", "ZBox", "Flat", "WSquare", "Pass", "Norm", "WinnerTakesAll",
    "Uniform", "Conservative", "SoftmaxRule",
]

"""Rules for nodes that are not linear layers."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class NodeRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.model_dump(exclude={"name"}).items())
        return f"{self.name}({params})" if params else self.name


class Pass(NodeRule):
    """Relevance passed on unchanged: ``R_in = R_out`` (activations, shape operations)."""

    name: Literal["pass"] = "pass"


class Norm(NodeRule):
    """Relevance split in proportion to the contributions:
    ``R_i = c_i * R / stab(sum_k c_k)`` (residual sums, average pooling, means)."""

    name: Literal["norm"] = "norm"
    stabilizer: float = Field(1e-6, ge=0)


class WinnerTakesAll(NodeRule):
    """Relevance of a max-pooling window goes to its maximum (the gradient);
    overlapping windows add up."""

    name: Literal["winner-takes-all"] = "winner-takes-all"


NODE_RULES = (Pass, Norm, WinnerTakesAll)

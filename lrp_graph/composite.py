"""Composites: which rule each layer gets.

A composite is an ordered list of ``(match, rule)`` entries; the first entry that
matches a node decides its rule. Nodes no entry matches get their handler's default
(linear layers: ``default``; activations: pass; residual sums, average pools: norm;
max-pools: winner-takes-all). Loadable from JSON or YAML::

    name: my-composite
    rules:
      - match: {op_type: [Conv], index: "0"}        # the first Conv (graph order from the input)
        rule: {name: z-box, low: -80.0, high: 0.0}
      - match: {op_type: [Conv], index: "1:", fraction: [0.0, 0.33]}
        rule: {name: gamma, gamma: 0.25}             # first third of the other convolutions
      - match: {name: "fc.*"}                        # node names (regular expression, bounded: see name_patterns)
        rule: {name: epsilon, epsilon: 1.0e-6}
    default: {name: epsilon}

``index`` is a Python slice or index ("0", "-1", "2:5", comma-separated) over the
linear layers that pass ``op_type``, counted in graph order from the input;
``fraction`` then selects the part ``[lo, hi)`` of the layers left, by position:
layer ``p`` of ``m`` is kept if ``round(lo * m) <= p < round(hi * m)``.
Linear layers are Conv, ConvTranspose, Gemm and MatMul with constant weights (with the
BatchNormalization, bias and scale nodes folded into them) on the path relevance takes
from the explained output to the input: layers of a gate branch (``x * sigmoid(f(x))``,
e.g. squeeze-and-excitation) receive no relevance and do not count, unless the product's node rule
is ``uniform`` (the ``attnlrp`` preset), which gives the gate half the relevance: then they count. A constant affine
node without such a layer before it (e.g. a lone BatchNormalization) is matched by its
own op type but does not count for ``index``/``fraction``.

A ``MatMul`` of two activations (attention's query-key and attention-value products) is not a
linear layer: node rules ``uniform`` (AttnLRP) or ``conservative`` (CP-LRP, the default) apply to it
(``match: {op_type: [MatMul]}``; formulas in ``rules/attention.py``). Both branches of such a product
count as relevance paths for ``index``/``fraction``, also where ``conservative`` gives one of them none.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from .errors import ConfigError
from .name_patterns import check_pattern, search
from .rules import (
    Alpha2Beta1,
    Conservative,
    Epsilon,
    Flat,
    Gamma,
    LinearRule,
    Norm,
    Rule,
    Uniform,
    ZBox,
    Zero,
    ZPlus,
    make_rule,
)

#: convolutions, as Zennit's ``Convolution`` type (transposed ones included)
CONV_OPS = ("Conv", "ConvTranspose")
LINEAR_OPS = (*CONV_OPS, "Gemm", "MatMul")


class Match(BaseModel):
    """Which nodes an entry applies to; all given conditions must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op_type: list[str] | None = None
    name: str | None = None
    index: str | None = None
    fraction: tuple[float, float] | None = None

    @field_validator("name")
    @classmethod
    def _regex(cls, value):
        if value is not None:
            check_pattern(value)  # valid, and of bounded cost
        return value

    @field_validator("index")
    @classmethod
    def _slices(cls, value):
        if value is not None:
            _parse_index(value)
        return value

    @field_validator("fraction")
    @classmethod
    def _fraction(cls, value):
        if value is not None and not (0.0 <= value[0] <= value[1] <= 1.0):
            raise ValueError(f"fraction must satisfy 0 <= lo <= hi <= 1, got {list(value)}")
        return value

    @property
    def positional(self) -> bool:
        return self.index is not None or self.fraction is not None


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    match: Match = Field(default_factory=Match)
    rule: Rule


class Composite(BaseModel):
    """An ordered rule map; see the module docstring for the format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    rules: list[Entry] = Field(default_factory=list)
    default: Rule = Field(default_factory=Epsilon)

    @field_validator("default")
    @classmethod
    def _linear_default(cls, value):
        if not isinstance(value, LinearRule):
            raise ValueError(f"default must be a rule for linear layers, got '{value.name}'")
        return value

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "Composite":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read composite file ({exc.strerror})") from None
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:
            raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {str(exc).splitlines()[0]}") from None
        return cls.parse(data, where=str(path))

    @classmethod
    def parse(cls, data, where: str = "composite") -> "Composite":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{where}: invalid composite at '{loc}': {err['msg']}") from None

    # -- parameters ------------------------------------------------------------------------------
    def with_params(self, epsilon=None, gamma=None, bounds=None) -> "Composite":
        """A copy with every epsilon / gamma / z-box bound replaced by the given values. In a composite with
        epsilon rules, ``epsilon`` also sets the epsilon-LRP inside LSTM and GRU nodes (their ``norm`` rule's
        stabilizer): in the composite's own entries for them, and in an entry for both added last."""

        def update(rule):
            changes = {}
            if epsilon is not None and type(rule) is Epsilon:
                changes["epsilon"] = float(epsilon)
            if gamma is not None and isinstance(rule, Gamma):
                changes["gamma"] = float(gamma)
            if bounds is not None and isinstance(rule, ZBox):
                changes["low"], changes["high"] = bounds
            if not changes:
                return rule
            try:  # validated like the same values in a composite file (no negative or NaN epsilon, ...)
                return type(rule).model_validate({**rule.model_dump(), **changes})
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(map(str, first.get("loc", ()))) or ", ".join(changes)
                raise ConfigError(f"{rule.name} rule, {where}: {first.get('msg')}") from None

        entries = [Entry(match=e.match, rule=update(e.rule)) for e in self.rules]
        if epsilon is not None and any(type(rule) is Epsilon for rule in [e.rule for e in self.rules] + [self.default]):
            entries = _recurrent_epsilon(entries, float(epsilon))
        return Composite(name=self.name, rules=entries, default=update(self.default))

    # -- matching --------------------------------------------------------------------------------
    def assign(self, items: list[tuple[str, list[str], bool]], eligible=None, kind=None) -> list[Rule | None]:
        """Rules for ``items`` = ``[(op_type, node names, counts_as_linear_layer)]`` in graph order.

        Only entries whose rule is a ``kind`` apply, and only to ``eligible`` items.
        Returns the matched rule per item, or None where no entry matches.
        """
        result: list[Rule | None] = [None] * len(items)
        eligible = eligible or [True] * len(items)
        for entry in self.rules:
            if kind is not None and not isinstance(entry.rule, kind):
                continue
            m = entry.match
            candidates = [
                i for i, (op, names, _) in enumerate(items)
                if eligible[i]
                and (m.op_type is None or op in m.op_type)
                and (m.name is None or any(search(m.name, n) for n in names))
            ]
            if m.positional:
                candidates = [i for i in candidates if items[i][2]]
                if m.index is not None:
                    candidates = _select(candidates, m.index)
                if m.fraction is not None:
                    lo, hi = m.fraction
                    total = len(candidates)
                    candidates = candidates[round(lo * total): round(hi * total)]
            for i in candidates:
                if result[i] is None:
                    result[i] = entry.rule
        return result


def _parse_index(spec: str) -> list:
    parts = []
    for piece in spec.split(","):
        piece = piece.strip()
        if not re.fullmatch(r"-?\d*(:-?\d*){0,2}", piece) or piece == "":
            raise ValueError(f"invalid index {piece!r}: use a Python index or slice like 0, -1, 2:5")
        if ":" in piece:
            parts.append(slice(*[int(p) if p else None for p in piece.split(":")]))
        else:
            parts.append(int(piece))
    return parts


def _select(items: list[int], spec: str) -> list[int]:
    chosen: list[int] = []
    for part in _parse_index(spec):
        if isinstance(part, slice):
            chosen.extend(items[part])
        elif -len(items) <= part < len(items):
            chosen.append(items[part])
    return sorted(set(chosen))


# -- presets --------------------------------------------------------------------------------------
def _entries(*pairs) -> list[Entry]:
    return [Entry(match=Match(**m), rule=make_rule(r)) for m, r in pairs]


CONV = {"op_type": list(CONV_OPS)}
DENSE = {"op_type": ["Gemm", "MatMul"]}
FIRST_LINEAR = {"op_type": list(LINEAR_OPS), "index": "0"}
FIRST_CONV = {"op_type": list(CONV_OPS), "index": "0"}
#: a node rule applies only to a MatMul that is not a linear layer: a product of two activations
BILINEAR = {"op_type": ["MatMul"]}
#: element-wise products of two activations (gated units)
PRODUCTS = {"op_type": ["Mul"]}
#: recurrent nodes (their handler takes the Norm rule; its stabilizer is the epsilon of their linear maps)
RECURRENT = ("LSTM", "GRU")
#: residual sums and differences, means, LayerNorm (their handlers take the Norm rule)
SUMS = {"op_type": ["Add", "Sum", "Sub", "ReduceMean", "ReduceSum", "LayerNormalization"]}


def _recurrent_epsilon(entries: list[Entry], epsilon: float) -> list[Entry]:
    """``entries`` with every ``norm`` entry for LSTM/GRU nodes set to ``epsilon``, and one for both at the end."""
    try:
        rule = Norm(stabilizer=epsilon)
    except ValidationError as exc:
        raise ConfigError(f"norm rule of LSTM/GRU, stabilizer: {exc.errors()[0].get('msg')}") from None
    both = Match(op_type=list(RECURRENT))
    recurrent = [isinstance(e.rule, Norm) and bool(e.match.op_type) and set(e.match.op_type) <= set(RECURRENT)
                 for e in entries]
    entries = [Entry(match=e.match, rule=rule) if r else e for e, r in zip(entries, recurrent)]
    return entries if any(e.match == both for e in entries) else entries + [Entry(match=both, rule=rule)]


def _preset_epsilon_plus(first=None, conv_rule=None):
    pairs = ([(first[0], first[1])] if first else []) + [(CONV, conv_rule or ZPlus()), (DENSE, Epsilon())]
    return pairs


PRESETS = {
    "lrp0": lambda: Composite(name="lrp0", default=Zero()),
    "epsilon": lambda: Composite(name="epsilon", default=Epsilon()),
    "gamma": lambda: Composite(name="gamma", rules=_entries((CONV, Gamma()), (DENSE, Epsilon()))),
    "epsilon-plus": lambda: Composite(name="epsilon-plus", rules=_entries(*_preset_epsilon_plus())),
    "epsilon-plus-flat": lambda: Composite(
        name="epsilon-plus-flat", rules=_entries(*_preset_epsilon_plus(first=(FIRST_LINEAR, Flat())))
    ),
    "epsilon-gamma-box": lambda: Composite(
        name="epsilon-gamma-box",
        rules=_entries((FIRST_CONV, ZBox()), (CONV, Gamma()), (DENSE, Epsilon())),
    ),
    "epsilon-alpha2-beta1": lambda: Composite(
        name="epsilon-alpha2-beta1", rules=_entries(*_preset_epsilon_plus(conv_rule=Alpha2Beta1()))
    ),
    "epsilon-alpha2-beta1-flat": lambda: Composite(
        name="epsilon-alpha2-beta1-flat",
        rules=_entries(*_preset_epsilon_plus(first=(FIRST_LINEAR, Flat()), conv_rule=Alpha2Beta1())),
    ),
    # Transformers: AttnLRP (Achtibat et al. 2024; lxt's rules) and CP-LRP (Ali et al. 2022; lxt's cp_LRP):
    # epsilon on the linear layers; products of two activations (query-key, attention-value) by the
    # uniform rule and Softmax by AttnLRP's rule, or the attention weights held constant (conservative).
    # Both: LayerNorm with its spread held constant, GELU and other activations passing relevance unchanged.
    # Residual sums, means and LayerNorm split relevance unstabilised, as lxt's gradient x input does.
    "attnlrp": lambda: Composite(name="attnlrp", rules=_entries(
        (BILINEAR, Uniform()), (PRODUCTS, Uniform()), (SUMS, Norm(stabilizer=0.0))), default=Epsilon()),
    "cp-lrp": lambda: Composite(name="cp-lrp", rules=_entries(
        (BILINEAR, Conservative()), (PRODUCTS, Conservative()), (SUMS, Norm(stabilizer=0.0))), default=Epsilon()),
    # The study (seed paper): LRP-0 throughout for the AlexNet ...
    "paper-alexnet": lambda: Composite(name="paper-alexnet", default=Zero()),
    # ... and for the ResNet: LRP-0 on the dense layers (and 1-D BatchNorm) near the output,
    # epsilon = 0.5 on the convolutions (BatchNorm2d folded in) and the input layer,
    # gamma = 5 on the third of the hidden convolutions nearest the input.
    "paper-resnet": lambda: Composite(
        name="paper-resnet",
        rules=_entries(
            (FIRST_CONV, Epsilon(epsilon=0.5)),
            ({"op_type": list(CONV_OPS), "index": "1:", "fraction": (0.0, 1.0 / 3.0)}, Gamma(gamma=5.0)),
            (CONV, Epsilon(epsilon=0.5)),
            (DENSE, Zero()),
            ({"op_type": ["BatchNormalization"]}, Zero()),
        ),
        default=Zero(),
    ),
}


def preset_names() -> list[str]:
    return list(PRESETS)


def get_composite(spec: "str | Path | Composite | dict", epsilon=None, gamma=None, bounds=None) -> Composite:
    """A composite from a preset name, a JSON/YAML file, a dict, or a Composite; then parameter overrides."""
    if isinstance(spec, Composite):
        composite = spec
    elif isinstance(spec, dict):
        composite = Composite.parse(spec)
    elif isinstance(spec, str) and spec in PRESETS:
        composite = PRESETS[spec]()
    elif Path(spec).suffix.lower() in (".json", ".yaml", ".yml") or Path(spec).exists():
        composite = Composite.load(spec)
    else:
        raise ConfigError(f"unknown composite '{spec}' (presets: {', '.join(PRESETS)}; or a .json/.yaml file)")
    if any(v is not None for v in (epsilon, gamma, bounds)):
        composite = composite.with_params(epsilon=epsilon, gamma=gamma, bounds=bounds)
    return composite


def needs_bounds(composite: Composite) -> bool:
    """True if a z-box rule still has its placeholder bounds."""
    rules = [e.rule for e in composite.rules] + [composite.default]
    return any(isinstance(r, ZBox) and "low" not in r.model_fields_set for r in rules)

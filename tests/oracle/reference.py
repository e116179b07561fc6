"""Zennit 0.5.1 reference relevance for the zoo models, in float64.

How the reference is taken (each point measured to matter; see the project's shared reference notes):

* float64 (``model.double()``): with epsilon = 1e-6, Zennit's float32 result is itself off its float64 result by up
  to ~1e-3 on some samples.
* BatchNorm is merged *exactly* into the preceding Conv/Linear (:func:`fold_batchnorms`), and replaced by
  ``nn.Identity``. Zennit's own merge (``SequentialMergeBatchNorm``, also inside ``ResNetCanonizer``) leaves the
  BatchNorm dividing by ``sqrt(1 + eps)``, while both ONNX exporters fold exactly; so Zennit's BatchNorm canonizer is
  never used here. For ResNets only the block canonizers (residual ``+`` -> ``Sum`` module, rule Norm) are applied.
* The SE multiply ``x * gate`` uses :class:`ConstantGateMul`.
* Relevance at the output is ``logit_t * onehot(t)`` (Zennit: ``attr_output = output * one_hot``).
* Max-pool: Zennit gives it the plain gradient (winner takes all, overlapping windows add up). Where onnxruntime's
  float32 forward picks another winner than torch (near-ties), :func:`with_winners` makes the float64 reference use
  onnxruntime's winners instead, separating tie-breaking from real errors.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from . import torchvision_stub

torchvision_stub.install()  # before zennit: it imports torchvision.models.resnet

from zennit.composites import (  # noqa: E402
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    LayerMapComposite,
    NameLayerMapComposite,
    layer_map_base,
)
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus  # noqa: E402
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer  # noqa: E402
from zennit.types import Linear as AnyLinear  # noqa: E402  (Conv*, ConvTranspose*, nn.Linear)

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
STANDARD_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: convolutions as Zennit's ``Convolution`` type has them (transposed ones included)
CONVS = STANDARD_CONVS + (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
MAXPOOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


# -- canonical float64 model -----------------------------------------------------------------------------------------
class ConstantGateMul(torch.autograd.Function):
    """``x * gate`` whose backward passes the incoming relevance to ``x`` unchanged and zero to ``gate``.

    This is LRP-epsilon for ``y = x * g`` with the gate ``g`` held as a constant weight,
    ``R_x = x g R_y / (x g + eps sign(x g))``, in the limit epsilon -> 0: ``R_x = R_y``; nothing flows into the gate
    branch. Zennit passes relevance backwards as the gradient between hooked layers, so this backward is that rule
    (a plain ``x * gate`` would scale the relevance by the gate and leak relevance into the gate branch).
    """

    @staticmethod
    def forward(ctx, x, gate):
        ctx.gate_shape = gate.shape
        return x * gate

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, grad_output.new_zeros(ctx.gate_shape)


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, attribute = name.split(".")
    parent = model
    for part in path:
        parent = getattr(parent, part)
    return parent, attribute


def fold_batchnorms(model: nn.Module) -> nn.Module:
    """Merge every BatchNorm exactly into the Conv/Linear right before it (in registration order) and replace it by
    ``nn.Identity``: ``w' = w * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``.

    Raises if a BatchNorm does not follow a linear layer (Zennit has no counterpart of our per-channel rule for it).
    """
    previous_name, previous = None, None
    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    for name, module in leaves:
        if isinstance(module, BATCHNORMS):
            if not isinstance(previous, (nn.Linear,) + CONVS):
                raise ValueError(f"BatchNorm '{name}' does not follow a linear layer (it follows '{previous_name}')")
            with torch.no_grad():
                scale = module.weight / torch.sqrt(module.running_var + module.eps)
                bias = previous.bias if previous.bias is not None else torch.zeros_like(module.running_mean)
                new_bias = (bias - module.running_mean) * scale + module.bias
                w = previous.weight
                if isinstance(previous, STANDARD_CONVS + (nn.Linear,)):  # output channels on the weight's axis 0
                    w.mul_(scale.reshape((-1,) + (1,) * (w.ndim - 1)))
                else:  # ConvTranspose: weight (C_in, C_out / groups, k...), output channels per group
                    g = previous.groups
                    grouped = w.reshape(g, w.shape[0] // g, *w.shape[1:])
                    w.copy_((grouped * scale.reshape(g, 1, w.shape[1], *([1] * (w.ndim - 2)))).reshape(w.shape))
                previous.bias = nn.Parameter(new_bias)
            parent, attribute = _parent(model, name)
            setattr(parent, attribute, nn.Identity())
        previous_name, previous = name, module
    return model


def canonical(model: nn.Module) -> nn.Module:
    """A float64 copy in eval mode with BatchNorms folded exactly and SE multiplies made rule-aware."""
    model = fold_batchnorms(copy.deepcopy(model).double().eval())
    for module in model.modules():
        if hasattr(module, "gate_mul"):
            module.gate_mul = ConstantGateMul.apply
    return model


def linear_layer_names(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Conv and Linear modules that carry relevance, in registration order (= graph order for the zoo models).

    Layers inside an SE gate branch (children of a module with a ``gate_mul``) carry no relevance and, as in our
    compiler's plan, do not count as layers ("first layer", "first third of the hidden convs").
    """
    gates = [name + "." for name, m in model.named_modules() if hasattr(m, "gate_mul")]
    return [
        (name, m) for name, m in model.named_modules()
        if isinstance(m, (nn.Linear,) + CONVS) and not any(name.startswith(g) for g in gates)
    ]


# -- composites ------------------------------------------------------------------------------------------------------
def safe_zero(z: torch.Tensor) -> torch.Tensor:
    """The LRP-0 "stabiliser": divide by z itself, with 0/0 taken as 0 (dividing by +inf where z == 0)."""
    return torch.where(z == 0, torch.full_like(z, float("inf")), z)


def lrp0():
    """Zennit's Epsilon rule with epsilon = 0 and safe division."""
    return Epsilon(epsilon=safe_zero)


def _canonizers():
    return [ResNetBasicBlockCanonizer(), ResNetBottleneckCanonizer()]


def _by_type(linear_hook):
    return LayerMapComposite(layer_map_base() + [(AnyLinear, linear_hook)], canonizers=_canonizers())


def _by_name(model, assign, default=None):
    """Rules per linear layer: ``assign(position, name, module) -> hook``; other layers as in layer_map_base."""
    layers = linear_layer_names(model)
    name_map = [((name,), assign(position, name, module)) for position, (name, module) in enumerate(layers)]
    layer_map = layer_map_base() + ([(AnyLinear, default)] if default is not None else [])
    return NameLayerMapComposite(name_map=name_map, layer_map=layer_map, canonizers=_canonizers())


def paper_resnet(model):
    """The study's ResNet composite: input conv epsilon 0.5; of the n other convs (graph order), the first
    round(n/3) gamma 5, the rest epsilon 0.5; dense layers LRP-0."""
    convs = [name for name, m in linear_layer_names(model) if isinstance(m, CONVS)]
    n_gamma = round((len(convs) - 1) * (1.0 / 3.0))
    gamma_names = set(convs[1:1 + n_gamma])

    def assign(position, name, module):
        if not isinstance(module, CONVS):
            return lrp0()
        return Gamma(gamma=5.0) if name in gamma_names else Epsilon(epsilon=0.5)

    return _by_name(model, assign)


def zennit_composite(preset: str, model: nn.Module, epsilon=None, gamma=None, bounds=None):
    """The Zennit composite equivalent to our preset ``preset`` (a fresh instance: composites hold hooks)."""
    low, high = bounds if bounds is not None else (None, None)
    kw = {"canonizers": _canonizers()}
    eps = 1e-6 if epsilon is None else epsilon
    gam = 0.25 if gamma is None else gamma
    if preset in ("lrp0", "paper-alexnet"):
        return _by_type(lrp0())
    if preset == "epsilon":
        return _by_type(Epsilon(epsilon=eps))
    if preset == "gamma":
        return LayerMapComposite(
            layer_map_base() + [(CONVS, Gamma(gamma=gam)), (nn.Linear, Epsilon(epsilon=eps))], **kw)
    if preset == "epsilon-plus":
        return EpsilonPlus(epsilon=eps, **kw)
    if preset == "epsilon-plus-flat":
        return EpsilonPlusFlat(epsilon=eps, **kw)
    if preset == "epsilon-gamma-box":
        return EpsilonGammaBox(low=low, high=high, epsilon=eps, gamma=gam, **kw)
    if preset == "epsilon-alpha2-beta1":
        return EpsilonAlpha2Beta1(epsilon=eps, **kw)
    if preset == "epsilon-alpha2-beta1-flat":
        return EpsilonAlpha2Beta1Flat(epsilon=eps, **kw)
    if preset == "paper-resnet":
        return paper_resnet(model)
    raise KeyError(preset)


#: Our single-rule names -> a Zennit hook factory (bounds: the z-box input bounds).
RULES = {
    "lrp0": lambda bounds: lrp0(),
    "epsilon": lambda bounds: Epsilon(),
    "gamma": lambda bounds: Gamma(),
    "alpha2-beta1": lambda bounds: AlphaBeta(alpha=2.0, beta=1.0),
    "alpha1-beta0": lambda bounds: AlphaBeta(alpha=1.0, beta=0.0),
    "z-plus": lambda bounds: ZPlus(),
    "z-box": lambda bounds: ZBox(low=bounds[0], high=bounds[1]),
    "flat": lambda bounds: Flat(),
    "w-square": lambda bounds: WSquare(),
}


def rule_composite(model: nn.Module, first: str | None = None, rest: str = "epsilon", bounds=(-3.0, 3.0)):
    """Rule ``first`` on the first linear layer (graph order), rule ``rest`` on every other linear layer."""
    def assign(position, name, module):
        return RULES[first if (first is not None and position == 0) else rest](bounds)
    return _by_name(model, assign)


# -- relevance -------------------------------------------------------------------------------------------------------
def relevance(model: nn.Module, composite, x: torch.Tensor, targets) -> tuple[np.ndarray, np.ndarray]:
    """Zennit relevance of ``model`` (a :func:`canonical` model) for ``x``, explaining ``logit_t * onehot(t)``.

    Returns (relevance, logits) as float64 arrays.
    """
    x = x.detach().to(torch.float64).clone().requires_grad_(True)
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    with composite.context(model) as hooked:
        logits = hooked(x)
        one_hot = torch.zeros_like(logits)
        one_hot[torch.arange(len(targets)), targets] = 1.0
        (result,) = torch.autograd.grad(logits, x, grad_outputs=logits * one_hot)
    return result.detach().numpy(), logits.detach().numpy()


def relative_errors(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-sample relative L2 error ``||ours - reference|| / ||reference||``."""
    n = len(reference)
    diff = np.asarray(ours, np.float64).reshape(n, -1) - reference.reshape(n, -1)
    return np.linalg.norm(diff, axis=1) / np.linalg.norm(reference.reshape(n, -1), axis=1)


# -- max-pool winners ------------------------------------------------------------------------------------------------
def ort_winners(onnx_path: str, x: np.ndarray) -> list[np.ndarray]:
    """The winners onnxruntime's float32 forward picks in each MaxPool node (graph order): ``Indices`` outputs,
    indices into the flattened pool input (batch and channel included)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(onnx_path)
    names = []
    for node in model.graph.node:
        if node.op_type == "MaxPool":
            if len(node.output) < 2 or not node.output[1]:
                del node.output[1:]
                node.output.append(node.output[0] + "__winners")
            names.append(node.output[1])
            model.graph.output.append(onnx.helper.make_tensor_value_info(node.output[1], onnx.TensorProto.INT64, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, {session.get_inputs()[0].name: x.astype(np.float32)})


def torch_winners(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """The winners torch picks in each MaxPool module (registration order), as ONNX-style global indices."""
    found = []

    def record(module, inputs, output):
        pool = getattr(torch.nn.functional, f"max_pool{inputs[0].ndim - 2}d")
        _, index = pool(inputs[0], module.kernel_size, module.stride, module.padding, module.dilation,
                        ceil_mode=module.ceil_mode, return_indices=True)
        plane = math.prod(inputs[0].shape[2:])
        offset = torch.arange(index.shape[0] * index.shape[1]).reshape(index.shape[:2] + (1,) * (index.ndim - 2))
        found.append((index + offset * plane).numpy())

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, MAXPOOLS)]
    try:
        with torch.no_grad():
            model(x.to(torch.float64))
    finally:
        for handle in handles:
            handle.remove()
    return found


class FixedWinnerPool(nn.Module):
    """A max-pool that takes given winners (global indices for a batch) for the samples ``rows`` of that batch.

    Its gradient routes each window's relevance to the given winner; overlapping windows add up.
    """

    def __init__(self, winners: np.ndarray, rows: np.ndarray):
        super().__init__()
        self.winners = torch.as_tensor(winners[rows])
        self.rows = torch.as_tensor(rows)

    def forward(self, x):
        per_sample = x[0].numel()
        shape = (-1,) + (1,) * (self.winners.ndim - 1)
        local = self.winners - self.rows.reshape(shape) * per_sample
        flat = x.reshape(x.shape[0], -1).gather(1, local.reshape(x.shape[0], -1))
        return flat.reshape(local.shape)


def with_winners(model: nn.Module, winners: list[np.ndarray], rows) -> nn.Module:
    """A copy of ``model`` whose MaxPool modules use ``winners`` (as from :func:`ort_winners`) for batch ``rows``."""
    model = copy.deepcopy(model)
    pools = [name for name, m in model.named_modules() if isinstance(m, MAXPOOLS)]
    if len(pools) != len(winners):
        raise ValueError(f"{len(pools)} MaxPool modules but {len(winners)} ONNX MaxPool nodes")
    for name, found in zip(pools, winners):
        parent, attribute = _parent(model, name)
        setattr(parent, attribute, FixedWinnerPool(found, np.asarray(rows)))
    return model

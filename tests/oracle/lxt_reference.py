"""lxt 2.1 (the AttnLRP authors' library) as the oracle for transformer explanations, in float64.

lxt computes LRP as gradient x input through a model whose modules it patches: LayerNorm with its
standard deviation detached, element-wise activations by the identity rule, the gradient at the
query and key divided by 4 and at the value by 2 (AttnLRP's uniform rule at both attention products;
the Softmax then gets its plain gradient, AttnLRP's softmax rule), or, for CP-LRP, query and key
detached. Its ready-made patch maps cover language models only (``lxt.efficient.models`` imports
torchvision and models of other transformers releases), so :func:`lxt_rules` applies lxt's own patch
functions to the classes a ``transformers`` audio model uses, and undoes them afterwards.

Two choices, each measured to matter:

* A GLU (a conformer's convolution module) has no lxt patch: :func:`lxt_rules` writes it as lxt's own gated MLP
  patches write a gated product (``gated_mlp_forward``: uniform rule and the sigmoid by the identity rule;
  ``cp_gated_mlp_forward``: the gate detached).
* lxt patches activation *modules*; a GELU called as a function (``nn.functional.gelu`` in Whisper's encoder)
  would keep its plain gradient there, so :func:`lxt_rules` wraps that function in lxt's identity rule too.
* float64 (``model.double()``); transformers' eager attention computes its Softmax in float32 whatever the
  model's dtype (``softmax(..., dtype=torch.float32)``): inside :func:`lxt_rules` the ``dtype`` argument is
  dropped, so the reference is float64 throughout.
* Relevance at the output is ``logit_t * onehot(t)``, as the compiled explainer starts it: in gradient x input
  that is the gradient ``onehot(t)`` at the logits (lxt's examples seed it with the logit itself, which scales
  every relevance by that logit). Linear layers
  get lxt's plain gradient (LRP-0): compare with the explainer compiled with ``epsilon=0``.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

VARIANTS = ("attnlrp", "cp-lrp")


@contextlib.contextmanager
def _patched(target, name, value):
    had = name in vars(target)
    old = vars(target).get(name)
    setattr(target, name, value)
    try:
        yield
    finally:
        if had:
            setattr(target, name, old)
        else:
            delattr(target, name)


def lxt_patches():
    """``lxt.efficient.patches``, imported without running ``lxt/efficient/__init__.py`` (which imports every
    model map of lxt's, among them torchvision and modules this transformers release no longer has)."""
    import lxt

    if "lxt.efficient" not in sys.modules:
        package = types.ModuleType("lxt.efficient")
        package.__path__ = [os.path.join(os.path.dirname(lxt.__file__), "efficient")]
        sys.modules["lxt.efficient"] = package
    return importlib.import_module("lxt.efficient.patches")


@contextlib.contextmanager
def lxt_rules(modeling_module: str, variant: str = "attnlrp"):
    """lxt's AttnLRP (or CP-LRP) rules on the classes of ``transformers.models.<modeling_module>``."""
    from transformers import activations

    patches = lxt_patches()

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}")
    modeling = importlib.import_module(f"transformers.models.{modeling_module}")
    wrap = patches.wrap_attention_forward if variant == "attnlrp" else patches.cp_wrap_attention_forward
    softmax, gelu = F.softmax, F.gelu
    rules = importlib.import_module("lxt.efficient.rules")

    def float64_softmax(x, dim=None, _stacklevel=3, dtype=None):
        return softmax(x, dim=dim)

    def identity_gelu(x, approximate="none"):  # a GELU called as a function (Whisper's encoder): identity rule too
        return rules.identity_rule_implicit(lambda v: gelu(v, approximate=approximate), x)

    def glu_forward(self, x):  # a conformer's GLU, written as lxt's gated MLP patches write a gated product
        a, b = x.chunk(2, dim=self.dim)
        if variant == "cp-lrp":
            return a * torch.sigmoid(rules.stop_gradient(b))
        return rules.divide_gradient(a * rules.identity_rule_implicit(torch.sigmoid, b), 2)

    with contextlib.ExitStack() as stack:
        enter = stack.enter_context
        enter(_patched(nn.LayerNorm, "forward", patches.layer_norm_forward))
        enter(_patched(nn.GLU, "forward", glu_forward))
        for act in (activations.GELUActivation, nn.GELU, nn.SiLU):
            enter(_patched(act, "original_forward", act.forward))
            enter(_patched(act, "forward", patches.non_linear_forward))
        enter(_patched(modeling, "eager_attention_forward", wrap(modeling.eager_attention_forward)))
        enter(_patched(F, "softmax", float64_softmax))
        enter(_patched(F, "gelu", identity_gelu))
        yield


def lxt_relevance(model: nn.Module, modeling_module: str, x: np.ndarray, targets, variant: str = "attnlrp",
                  logits_of=lambda out: out.logits, dtype=torch.float64) -> tuple[np.ndarray, np.ndarray]:
    """``(relevance, logits)`` in float64 (or ``dtype``, to measure the reference's own float32 error): lxt's
    gradient x input for the logits ``targets`` of ``x``."""
    model = model.to(dtype).eval()
    for m in model.modules():  # rotary embeddings cache their table in the dtype of the last run
        if getattr(m, "cached_sequence_length", None) is not None:
            m.cached_sequence_length = None
    try:
        xt = torch.tensor(np.asarray(x), dtype=dtype, requires_grad=True)
        with lxt_rules(modeling_module, variant):
            logits = logits_of(model(xt))
            picked = logits[torch.arange(len(xt)), torch.as_tensor(targets)]
            (grad,) = torch.autograd.grad(picked.sum(), xt)
    finally:
        model.float()
    return (xt.detach() * grad).numpy(), logits.detach().numpy()

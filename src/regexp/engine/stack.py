"""A population: K models of one architecture trained as one, their parameters stacked along a
leading member dimension.

A member is one run, with its own seed (initial weights, batch order, dropout masks), data
and hyperparameters. `Stack(models, generators)` takes the K models as K lone runs build them
(nn.Sequential of Linear, Conv2d, norm, activation, pooling and dropout layers) and moves
their parameters into one flat buffer of shape (K, P), member by member, so that an optimizer
updates them all in a few large in-place operations; the gradients land in a buffer of the
same shape. Each member's own model keeps working on views of those buffers: its state_dict,
its histograms and its figures are the member's, with nothing copied. (A Linear weight is
stored transposed, (in, out), and its member's (out, in) weight is a transposed view.)

A member's numbers are its lone run's, bit for bit (tests/test_population.py compares their
files as bytes). So the forward pass stacks only what rounds the same in any company: the
Linear layers' batched products (a lone run's features skip the member dimension and take
addmm, which rounds as a member's share of a batched product, except where a product has a
single row or column: _batched_linear says what both take there), ReLU and dropout, whose
masks each
member draws from its own generator in the order and shape its lone run draws them. Every
other layer (conv, the norms, pooling, smooth activations) runs member by member on the
member's own contiguous slice, through the member's own module, as its lone run calls it:
stacked, their kernels would reduce or vectorize a member's values in another order.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from regexp.components.models import weights

# A member's parameters are rows of the (K, P) buffer: for K > 1 each layer's stacked weight
# is a strided view, which autograd accumulates into in place (what we want) with a warning.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout")

# Below this many multiply-adds per matrix, torch's CPU bmm takes a loop of its own, which
# rounds apart from addmm; above it, MKL's gemm matrix by matrix (addmm's numbers, in its
# reproducible mode: regexp/__init__.py).
LOOPED_BELOW = 400

# Layers whose result for one member does not depend on the others beside it: the same
# operation on each element (a ReLU's max, a leaky ReLU's single product), or none at all.
EXACT_ON_ANY_LAYOUT = (nn.ReLU, nn.LeakyReLU, nn.Identity)
# Layers each member runs on its own slice, through its lone run's own call: over a stacked
# layout their kernels round a member apart from its lone run (conv, the norms' reductions,
# and activations whose vectorized and scalar code round differently, which a member meets at
# other element positions than alone).
PER_MEMBER = (
    nn.Conv2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.ELU,
)


def layers_of(model: nn.Module) -> list[nn.Module]:
    return list(model) if isinstance(model, nn.Sequential) else [model]


class Stack:
    """K models as one: `forward(x)` gives every member's output, (K, B, outputs)."""

    def __init__(self, models: list[nn.Module], generators: list[torch.Generator]):
        self.models, self.generators = models, generators
        self.k = k = len(models)
        # Members match parameter by parameter in order (their names differ where a member
        # with dropout 0 has no Dropout layer, which shifts the indices of nn.Sequential).
        params = [list(m.parameters()) for m in models]
        shapes = [[tuple(p.shape) for p in ps] for ps in params]
        if any(s != shapes[0] for s in shapes):
            raise ValueError("members of a population must have one architecture")
        sizes = [p.numel() for p in params[0]]
        # Linear weights are kept transposed, (K, in, out), in both buffers: the batched
        # product's weight gradient then lands in layout (no copy), and a lone run's 2-D
        # product (addmm) rounds exactly as a member's batched one (baddbmm) does.
        linear = {id(m.weight) for m in models[0].modules() if isinstance(m, nn.Linear)}
        biases = {id(m.bias) for m in models[0].modules() if isinstance(m, nn.Linear)}
        like = params[0][0]
        self.size = sum(sizes)
        self.flat = torch.empty(k, self.size, dtype=like.dtype, device=like.device)
        self.grad = torch.zeros_like(self.flat)
        # Each member's parameters become views of its row; the Linear layers' stacked views
        # below, keyed by the first member's parameter, are what their batched products
        # differentiate (the other layers run through each member's own module).
        self.stacked: dict[int, torch.Tensor] = {}
        # A lone run's Linear weights as (in, out) leaves of their own on the same memory:
        # its 2-D products differentiate them, with no transpose to go through each step.
        self.lone: dict[int, torch.Tensor] = {}
        offset = 0
        for position, size in enumerate(sizes):
            shape = params[0][position].shape
            flip = id(params[0][position]) in linear
            stored = (shape[1], shape[0]) if flip else shape
            view = self.flat[:, offset : offset + size].view(k, *stored)
            grad = self.grad[:, offset : offset + size].view(k, *stored)
            for i in range(k):
                p = params[i][position]
                member, member_grad = (view[i].t(), grad[i].t()) if flip else (view[i], grad[i])
                member.copy_(p.detach())
                p.data, p.grad = member, member_grad
            if flip or id(params[0][position]) in biases:
                view.requires_grad_(True)
                view.grad = grad
                self.stacked[id(params[0][position])] = view
            if flip and k == 1:
                lone = view[0].detach().requires_grad_(True)
                lone.grad = grad[0]
                self.lone[id(params[0][position])] = lone
            offset += size
        self.plan = self._plan()
        # The members' layers whose result depends on their mode (the norms with batch
        # statistics), set to the mode of each forward pass.
        self.moded = [
            layer
            for kind, payload in self.plan
            if kind == "per member"
            for layer in payload
            if isinstance(layer, (nn.modules.batchnorm._BatchNorm, nn.InstanceNorm2d))
        ]

    # --- the layers -----------------------------------------------------------------------

    def _plan(self) -> list:
        """The members' layers as stacked steps: (kind, payload). Dropout layers, which a
        member with p = 0 does not have, become a step with each member's p."""
        sequences = []
        for m in self.models:
            steps, pending = [], None
            for layer in layers_of(m):
                if isinstance(layer, (nn.Dropout, nn.Dropout2d)):
                    pending = (type(layer), layer.p)
                    continue
                steps.append((pending, layer))
                pending = None
            sequences.append(steps)
        if len({len(s) for s in sequences}) != 1:
            raise ValueError("members of a population must have one architecture")
        plan = []
        for position in zip(*sequences, strict=True):
            drops = [d for d, _ in position]
            if any(d is not None for d in drops):
                kind = next(d[0] for d in drops if d is not None)
                plan.append(("dropout", (kind, [0.0 if d is None else d[1] for d in drops])))
            plan.append(self._step([layer for _, layer in position]))
        return plan

    def _step(self, layers: list[nn.Module]):
        layer = layers[0]
        if isinstance(layer, nn.Linear):  # its weight stacked as (K, in, out)
            weight, bias = self.stacked[id(layer.weight)], None
            if layer.bias is not None:
                bias = self.stacked[id(layer.bias)]
            return ("linear", (weight, bias, layer))
        if isinstance(layer, nn.Flatten):
            return ("flatten", None)
        if isinstance(layer, EXACT_ON_ANY_LAYOUT):
            return ("elementwise", layer)
        if isinstance(layer, PER_MEMBER):
            return ("per member", layers)
        raise ValueError(f"a population cannot stack a {type(layer).__name__} layer")

    # --- the forward pass -------------------------------------------------------------------

    def forward(self, x: torch.Tensor, training: bool, shared: bool = False) -> torch.Tensor:
        """Every member's output on its inputs `x`, (K, B, ...), or with `shared` on the same
        inputs (B, ...). With `training`, dropout draws masks and batch norm uses and updates
        the batch statistics, as each lone run in train mode would."""
        k = self.k
        # A lone run's tensors skip the member dimension, as in a hand-written loop (a member
        # dimension costs views at every op and in its backward).
        lone = k == 1
        if lone:
            x = x if shared else x[0]
        elif shared:
            x = x.unsqueeze(0).expand(k, *x.shape)
        for layer in self.moded:
            layer.training = training
        for kind, payload in self.plan:
            if kind == "linear":
                weight, bias, layer = payload
                if lone:
                    x = _lone_linear(x, self.lone, weight, bias, layer)
                else:
                    x = _batched_linear(x, weight, bias)
            elif kind == "elementwise":
                x = payload(x)
            elif kind == "per member":  # each member's own layer on its own (B, ...) slice
                x = payload[0](x) if lone else torch.stack([f(x[i]) for i, f in enumerate(payload)])
            elif kind == "flatten":
                x = x.flatten(1) if lone else x.flatten(2)
            elif kind == "dropout" and training:
                if lone:  # its mask drawn as a member's
                    x = self._dropout(x.unsqueeze(0), *payload)[0]
                else:
                    x = self._dropout(x, *payload)
        return x.unsqueeze(0) if lone else x

    def _dropout(self, x, kind, ps: list[float]) -> torch.Tensor:
        """Each member's mask drawn from its own generator, shaped as its lone run draws it:
        (B, ...) for Dropout, (B, C, 1, 1) for Dropout2d (whole channels)."""
        shape = x.shape[1:] if kind is not nn.Dropout2d else (*x.shape[1:3], 1, 1)
        noise = x.new_ones(self.k, *shape)
        for i, p in enumerate(ps):
            if p > 0:
                noise[i].bernoulli_(1 - p, generator=self.generators[i]).div_(1 - p)
        return x * noise

    # --- state ------------------------------------------------------------------------------

    def zero_grad(self) -> None:
        self.grad.zero_()


def _batched_linear(x, weight, bias) -> torch.Tensor:
    """(K, B, in) through weights (K, in, out) and biases (K, out), each member's products
    rounded as its lone run's (_lone_linear) round them."""
    b, n_in, n_out = x.shape[1], *weight.shape[1:]
    if b * n_in * n_out >= LOOPED_BELOW:  # (below: bmm's own loop, the same for any K)
        if n_out == 1:
            # A lone product with one column takes MKL's gemv, a batched one its gemm, which
            # round apart: products and row sums by element round alike for any K.
            out = (x * weight.transpose(1, 2)).sum(2, keepdim=True)
            return out if bias is None else out + bias.unsqueeze(1)
        if _one_column(b, n_in, x.requires_grad):
            return _MemberByMember.apply(x, weight, bias)
    return torch.bmm(x, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, weight)


def _lone_linear(x, lone, weight, bias, layer) -> torch.Tensor:
    """A lone run's (B, in) features through its Linear layer: addmm, as nn.Linear does, but
    where a population takes another way (_batched_linear): bmm's own loop for a small
    product, and for a single output its products and row sums by element, here in 2-D on
    the run's own leaves (through the member dimension they cost a lone step 10% more)."""
    w, b = lone[id(layer.weight)], layer.bias
    if x.shape[0] * w.numel() < LOOPED_BELOW:
        return _batched_linear(x.unsqueeze(0), weight, bias).squeeze(0)
    if w.shape[1] == 1:
        out = (x * w.t()).sum(1, keepdim=True)
        return out if b is None else out + b
    return x @ w if b is None else torch.addmm(b, x, w)


class _MemberByMember(torch.autograd.Function):
    """(K, B, in) @ (K, in, out) + (K, out), each member's products (forward and backward)
    those of its lone run's addmm, written into one tensor: one autograd node, not K. Where
    a product has a single row or column but more than one output (a batch of one, a layer
    of width one): rare."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.bias = bias is not None
        out = x.new_empty(*x.shape[:2], weight.shape[2])
        for i in range(len(weight)):
            if bias is None:
                torch.mm(x[i], weight[i], out=out[i])
            else:
                torch.addmm(bias[i], x[i], weight[i], out=out[i])
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        gx = torch.empty_like(x) if need[0] else None
        gw = torch.empty_like(weight) if need[1] else None
        gb = grad.new_empty(len(weight), weight.shape[2]) if ctx.bias and need[2] else None
        for i in range(len(weight)):  # as addmm's backward takes them, member by member
            if gx is not None:
                torch.mm(grad[i], weight[i].t(), out=gx[i])
            if gw is not None:
                torch.mm(x[i].t(), grad[i], out=gw[i])
            if gb is not None:
                torch.sum(grad[i], 0, out=gb[i])
        return gx, gw, gb


def _one_column(b: int, n_in: int, input_grad: bool) -> bool:
    """Whether a product of a Linear layer with more than one output has a single row or
    column: the forward (b, out) where b is 1, the input's gradient (b, in) where either is."""
    return b == 1 or (n_in == 1 and input_grad)


# --- what the stack knows of its weights ----------------------------------------------------

SPARSE_BELOW = 1e-3  # a weight with |w| under this counts as zero in weights/sparsity


class WeightStats:
    """Each member's L2 norm, L1 norm and share of near-zero entries (|w| < SPARSE_BELOW) of
    its weights (Linear and Conv weights: no biases, no norm layers), taken on the device in a
    few ops over the population's flat parameters."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.mask = weight_mask(stack)
        self.count = int(self.mask.sum())

    def __bool__(self) -> bool:
        return self.count > 0

    def __call__(self) -> list[torch.Tensor]:
        a = (self.stack.flat * self.mask).abs_()
        l2, l1 = (a * a).sum(1).sqrt(), a.sum(1)
        # Minus the count of |w| < t among the weights, in float ops (several times faster on
        # a CPU than a comparison into a bool tensor): min(|w| - t, 0) has the sign -1 below t.
        below = (a.sub_(SPARSE_BELOW).clamp_(max=0).sign_() * self.mask).sum(1)
        return [l2, l1, below]

    def read(self, values: list[float]) -> dict[str, float]:
        l2, l1, minus_below = values[:3]
        return {
            "weights_l2_norm": l2,
            "weights_l1_norm": l1,
            "weights_sparsity": abs(minus_below) / self.count,
        }


def weight_mask(stack: Stack, include_all: bool = False) -> torch.Tensor:
    """(P,): 1 where the population's flat parameters hold a weight of a Linear or Conv layer
    (every parameter with `include_all`), else 0."""
    model = stack.models[0]
    chosen = {id(w) for w in weights(model)}
    parts = [
        torch.full((p.numel(),), float(include_all or id(p) in chosen)) for p in model.parameters()
    ]
    return torch.cat(parts).to(stack.flat)

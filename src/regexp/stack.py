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

The forward pass computes every member at once: a batched matrix product per Linear layer (a
lone run's features skip the member dimension up to its first norm or Conv layer), a
grouped convolution per Conv layer, and each norm layer in one call on a (batch, member x
channel) layout, where each member's channels are normalized with their own statistics and
running buffers. Dropout draws each member's masks from the member's own generator, in the
order and shape its lone run draws them, so that a member's record equals its lone run's.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F

from regexp.models import weights

# A member's parameters are rows of the (K, P) buffer: for K > 1 each layer's stacked weight
# is a strided view, which autograd accumulates into in place (what we want) with a warning.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout")

# Below this many multiply-adds per matrix, torch's CPU bmm takes a loop of its own, which
# rounds apart from addmm; above it, it runs addmm matrix by matrix (the same numbers).
LOOPED_BELOW = 400

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)
POINTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.ELU,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
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
        like = params[0][0]
        self.size = sum(sizes)
        self.flat = torch.empty(k, self.size, dtype=like.dtype, device=like.device)
        self.grad = torch.zeros_like(self.flat)
        # Each member's parameters become views of its row; the stacked views below, keyed by
        # the first member's parameter, are what the forward pass differentiates.
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
            view.requires_grad_(True)
            view.grad = grad
            self.stacked[id(params[0][position])] = view
            if flip and k == 1:
                lone = view[0].detach().requires_grad_(True)
                lone.grad = grad[0]
                self.lone[id(params[0][position])] = lone
            offset += size
        self.plan = self._plan()

    # --- the layers -----------------------------------------------------------------------

    def _plan(self) -> list:
        """The members' layers as stacked steps: (kind, payload). Dropout layers, which a
        member with p = 0 does not have, become a step with each member's p."""
        sequences = []
        for m in self.models:
            steps, pending = [], None
            for name, layer in _named_layers(m):
                if isinstance(layer, (nn.Dropout, nn.Dropout2d)):
                    pending = (type(layer), layer.p)
                    continue
                steps.append((pending, name, layer))
                pending = None
            sequences.append(steps)
        length = {len(s) for s in sequences}
        if len(length) != 1:
            raise ValueError("members of a population must have one architecture")
        plan = []
        for position in zip(*sequences, strict=True):
            drops = [d for d, _, _ in position]
            if any(d is not None for d in drops):
                kind = next(d[0] for d in drops if d is not None)
                plan.append(("dropout", (kind, [0.0 if d is None else d[1] for d in drops])))
            plan.append(self._step([layer for _, _, layer in position]))
        return plan

    def _view(self, param) -> torch.Tensor | None:
        return None if param is None else self.stacked[id(param)]

    def _step(self, layers: list[nn.Module]):
        layer = layers[0]
        if isinstance(layer, nn.Linear):  # its weight stacked as (K, in, out)
            return ("linear", (self._view(layer.weight), self._view(layer.bias), layer))
        if isinstance(layer, nn.Conv2d):
            return ("conv", (self._view(layer.weight), self._view(layer.bias), layer))
        if isinstance(layer, NORMS):
            return ("norm", self._norm(layers))
        if isinstance(layer, nn.Flatten):
            return ("flatten", None)
        if isinstance(layer, POINTWISE):
            return ("pointwise", layer)
        raise ValueError(f"a population cannot stack a {type(layer).__name__} layer")

    def _norm(self, layers: list[nn.Module]):
        """A norm layer over all members, its running buffers stacked (member-major, so that
        member i's are a slice) and each member's buffers made views of them."""
        layer = layers[0]
        buffers = {}
        for key, value in layer.named_buffers():
            stacked = torch.stack([dict(m.named_buffers())[key] for m in layers]).flatten()
            if value.dim() == 0:  # num_batches_tracked: one count per member
                stacked = stacked.view(self.k)
            for i, m in enumerate(layers):
                size = value.numel()
                setattr(
                    m, key, stacked[i] if value.dim() == 0 else stacked[i * size : (i + 1) * size]
                )
            buffers[key] = stacked
        weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
        return layer, self._view(weight), self._view(bias), buffers

    # --- the forward pass -------------------------------------------------------------------

    def forward(self, x: torch.Tensor, training: bool, shared: bool = False) -> torch.Tensor:
        """Every member's output on its inputs `x`, (K, B, *in_shape), or with `shared` on the
        same inputs (B, *in_shape). With `training`, dropout draws masks and batch norm uses
        and updates the batch statistics, as each lone run in train mode would."""
        k = self.k
        maps = False  # the layout: (K, B, F) for features, (B, K*C, H, W) for conv maps
        if x.dim() - (0 if shared else 1) == 4:  # images
            b = x.shape[0 if shared else 1]
            if shared:
                x = x.repeat(1, k, 1, 1) if k > 1 else x
            else:
                x = x.transpose(0, 1).reshape(b, -1, *x.shape[3:])
            maps = True
        elif k == 1:
            # A lone run's features stay (B, F) through its Linear, pointwise and dropout
            # layers, as in a hand-written loop: a member dimension costs views at every op
            # and in its backward. Its addmm rounds as the batched product of one member.
            x = x if shared else x[0]
        else:
            x = x.unsqueeze(0).expand(k, *x.shape) if shared else x
        lone = k == 1 and not maps
        for kind, payload in self.plan:
            if lone and kind not in ("linear", "pointwise", "dropout"):
                x, lone = x.unsqueeze(0), False
            if kind == "linear":
                weight, bias, layer = payload
                if not lone:
                    x = _batched_linear(x, weight, bias)
                    continue
                w, b = self.lone[id(layer.weight)], layer.bias
                if x.shape[0] * w.numel() >= LOOPED_BELOW:
                    x = x @ w if b is None else torch.addmm(b, x, w)
                else:  # small enough for bmm's own loop, which rounds apart from addmm
                    x = _batched_linear(x.unsqueeze(0), weight, bias).squeeze(0)
            elif kind == "pointwise":
                x = payload(x)
            elif kind == "conv":
                weight, bias, layer = payload
                x = F.conv2d(
                    x,
                    weight.reshape(-1, *weight.shape[2:]),
                    None if bias is None else bias.reshape(-1),
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    k,
                )
            elif kind == "flatten":
                if maps:  # (B, K*C, H, W) -> (K, B, C*H*W)
                    x = x.reshape(x.shape[0], k, -1).transpose(0, 1)
                    maps = False
                else:
                    x = x.reshape(k, x.shape[1], -1)
            elif kind == "norm":
                x = self._normalize(x, payload, training, maps)
            elif kind == "dropout" and training:
                if lone:  # its mask drawn as a member's, (1, B, F)
                    x = self._dropout(x.unsqueeze(0), *payload, maps)[0]
                else:
                    x = self._dropout(x, *payload, maps)
        return x.unsqueeze(0) if lone else x

    def _normalize(self, x, payload, training: bool, maps: bool) -> torch.Tensor:
        layer, weight, bias, buffers = payload
        k = self.k
        w = None if weight is None else weight.reshape(-1)
        b = None if bias is None else bias.reshape(-1)
        if not maps:  # (K, B, C) -> (B, K*C)
            batch = x.shape[1]
            x = x.transpose(0, 1).reshape(batch, -1)
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            factor = layer.momentum
            if training and layer.track_running_stats:
                buffers["num_batches_tracked"].add_(1)
                if factor is None:  # a cumulative average
                    factor = 1.0 / float(buffers["num_batches_tracked"][0])
            use_batch = training or not layer.track_running_stats
            out = F.batch_norm(
                x,
                buffers.get("running_mean") if not training or layer.track_running_stats else None,
                buffers.get("running_var") if not training or layer.track_running_stats else None,
                w,
                b,
                use_batch,
                0.0 if factor is None else factor,
                layer.eps,
            )
        elif isinstance(layer, nn.InstanceNorm2d):
            out = F.instance_norm(
                x,
                buffers.get("running_mean"),
                buffers.get("running_var"),
                w,
                b,
                training or not layer.track_running_stats,
                layer.momentum if layer.momentum is not None else 0.0,
                layer.eps,
            )
        elif isinstance(layer, nn.GroupNorm):  # each member's channels form its own groups
            out = F.group_norm(x, layer.num_groups * k, w, b, layer.eps)
        else:  # LayerNorm over a member's whole example: a group norm of one group a member
            batch = x.shape[0]
            flat = x.reshape(batch, -1, 1)
            out = F.group_norm(flat, k, w, b, layer.eps).view(x.shape)
        if not maps:
            out = out.view(out.shape[0], k, -1).transpose(0, 1)
        return out

    def _dropout(self, x, kind, ps: list[float], maps: bool) -> torch.Tensor:
        """Each member's mask drawn from its own generator, shaped as its lone run draws it:
        (B, F) for Dropout, (B, C, 1, 1) for Dropout2d (whole channels)."""
        k = self.k
        if maps:
            view = x.view(x.shape[0], k, -1, *x.shape[2:])  # (B, K, C, H, W)
            shape = (x.shape[0], view.shape[2], 1, 1) if kind is nn.Dropout2d else view.shape[2:]
            if kind is nn.Dropout2d:
                noise = x.new_ones(k, x.shape[0], view.shape[2], 1, 1)
            else:
                noise = x.new_ones(k, x.shape[0], *view.shape[2:])
        else:
            shape = x.shape[1:]
            noise = x.new_ones(k, *shape)
        for i, p in enumerate(ps):
            if p > 0:
                noise[i].bernoulli_(1 - p, generator=self.generators[i]).div_(1 - p)
        del shape
        if maps:  # (K, B, C, ...) -> (B, K*C, ...)
            noise = noise.transpose(0, 1).reshape(x.shape[0], -1, *noise.shape[3:])
        return x * noise

    # --- state ------------------------------------------------------------------------------

    def zero_grad(self) -> None:
        self.grad.zero_()


def _batched_linear(x, weight, bias) -> torch.Tensor:
    """(K, B, in) through weights (K, in, out) and biases (K, out)."""
    return torch.bmm(x, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, weight)


def _named_layers(model: nn.Module):
    if isinstance(model, nn.Sequential):
        return list(model.named_children())
    return [("", model)]


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

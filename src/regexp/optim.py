"""Optimizers (each option's stacked update, which trains a population, and the torch.optim
optimizer it configures), param groups, L1/L2 penalties and losses. The learning-rate
schedules are in schedules.py.

Why it is long: each optimizer option's schema sits beside both things it builds: the
stacked update the loop steps a population with, which replays the torch.optim optimizer's
step over K members at once, and that torch.optim optimizer itself (`build`), which the
probes show and scripts/bench.py's hand-written loop runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from omegaconf import MISSING

from regexp.errors import ConfigError
from regexp.lazy import lazy
from regexp.models import weights
from regexp.options import knobs, need, option
from regexp.schedules import Sched

torch = lazy("torch")
nn = lazy("torch.nn")
F = lazy("torch.nn.functional")


# --- a population's optimizer step ------------------------------------------------------------


class Update:
    """One optimizer's step for a population of K members: their parameters are the rows of
    one flat (K, P) buffer, their gradients those of another, and each hyperparameter is a
    (K, 1) column, so that a step is a few large in-place operations whatever K and however
    many layers. Each option's subclass is torch.optim's single-tensor step (foreach=False)
    written over the rows, operation for operation, every scalar rounded to float32 where
    torch's kernels round it: a member's numbers are those torch.optim gives it alone.

    `lr` is each member's lr, (K, 1) float64 on the CPU: the very Python float torch.optim
    holds, so that the scalars torch computes from it in double (Adam's lr / (1 - beta1^t))
    come out the same, without a device sync. The schedule writes it (`set_lr`) once an
    epoch. Step counts are host ints, and `active` is read on the host: keep it on the CPU.

    A subclass sets up its state and columns in `setup` and steps in `apply`; `on_lr` derives
    what depends on the lr whenever it changes. Its state is the (K, P) tensors in `state`.
    """

    def __init__(self, cfgs: Sequence[Optim], params: torch.Tensor, decayed=None):
        if params.dim() != 2 or params.shape[0] != len(cfgs):
            shape = tuple(params.shape)
            raise ValueError(f"{len(cfgs)} members need parameters of shape (K, P), got {shape}")
        self.knobs = [cfg.knobs() for cfg in cfgs]
        self.k, self.device = len(cfgs), params.device
        self.lr = torch.tensor([[k["lr"]] for k in self.knobs], dtype=torch.float64)
        self.steps = [0] * self.k
        self.state: dict[str, torch.Tensor] = {}
        self.unused: set[tuple[str, int]] = set()  # (state, member) a member's algorithm lacks
        self.scratches: list[torch.Tensor] = []
        if decayed is not None:
            if decayed.shape != params.shape[1:]:
                raise ValueError(f"decayed is (P,) = {tuple(params.shape[1:])}")
            decayed = decayed.to(self.device, torch.bool)
            decayed = None if bool(decayed.all()) else decayed
        self.decayed = decayed  # (P,) bool: the entries weight decay applies to; None: all
        self.weight_decay = self.decay_column(self.knob("weight_decay"))
        self._lr_seen = None
        self.setup(params)

    # --- what subclasses use

    def knob(self, name: str) -> list:
        """Each member's value of a knob (a keyword argument of the torch optimizer)."""
        return [k[name] for k in self.knobs]

    def same(self, name: str):
        """A knob that changes the algorithm, the same for every member (or ValueError)."""
        values = set(self.knob(name))
        if len(values) > 1:
            raise ValueError(
                f"optim.{name} differs between the members of a population ({sorted(values)}):"
                f" train each value as a population of its own"
            )
        return values.pop()

    def column(self, values: Sequence) -> torch.Tensor:
        """Per-member scalars as float32 on the device, (K, 1) (or (K, n) for n-tuples), each
        Python float rounded as torch's kernels round a scalar argument."""
        t = torch.tensor(values, dtype=torch.float32)
        t = t.view(-1, 1) if t.dim() == 1 else t
        if self.device.type == "cpu":
            return t
        # From pageable memory, a non-blocking copy is staged at once: no sync with the device.
        return t.to(self.device, non_blocking=True)

    def decay_column(self, values: Sequence[float]):
        """Per-member weight decay where `decayed`, 0 elsewhere; None if all are 0."""
        if not any(values):
            return None
        col = self.column(values)
        return col if self.decayed is None else col * self.decayed

    def buffer(self, name: str, params: torch.Tensor, fill=None, used=None) -> torch.Tensor:
        """A state tensor like `params`: zeros, or each member's row filled with `fill`; `used`
        (K bools) marks the members whose algorithm has it (None: all), which save it."""
        t = torch.zeros_like(params) if fill is None else fill.expand_as(params).clone()
        self.state[name] = t
        if used is not None:
            self.unused |= {(name, k) for k in range(self.k) if not used[k]}
        return t

    def scratch(self, i: int, like: torch.Tensor) -> torch.Tensor:
        """The i-th tensor of intermediates, kept from step to step: a fresh (K, P) tensor
        each step would cost more than the arithmetic (new pages to fault in)."""
        while len(self.scratches) <= i:
            self.scratches.append(torch.empty_like(like))
        return self.scratches[i]

    def coupled_decay(self, params: torch.Tensor, grads: torch.Tensor, scratch: int = 0):
        """grad + weight_decay * param, as torch's `grad.add(param, alpha=wd)` (in a scratch
        tensor: the gradients stay as they are)."""
        if self.weight_decay is None:
            return grads
        return torch.addcmul(grads, params, self.weight_decay, out=self.scratch(scratch, grads))

    def setup(self, params: torch.Tensor) -> None:
        pass

    def on_lr(self, lrs: list[float]) -> None:
        self.lrs = lrs
        self.neg_lr = self.column([-lr for lr in lrs])

    def apply(self, params: torch.Tensor, grads: torch.Tensor) -> None:
        raise NotImplementedError

    # --- what the loop uses

    def set_lr(self, lrs: Sequence[float]) -> None:
        """Each member's lr, as Python floats (a schedule's `lrs()`)."""
        self.lr.copy_(torch.tensor(lrs, dtype=torch.float64).view(-1, 1))

    def step(self, params: torch.Tensor, grads: torch.Tensor, active=None) -> None:
        """Update `params` in place from `grads`, both (K, P). Members that `active` (K bools,
        or None: all) marks False are not touched at all, nor their state or step count."""
        on = [True] * self.k if active is None else [bool(a) for a in _host(active)]
        frozen = [k for k in range(self.k) if not on[k]]
        if len(frozen) == self.k:
            return
        self.steps = [s + 1 if a else s for s, a in zip(self.steps, on, strict=True)]
        seen = (id(self.lr), self.lr._version)  # any write to lr bumps its version
        if seen != self._lr_seen:
            self.on_lr(self.lr[:, 0].tolist())
            self._lr_seen = seen
        if params.requires_grad:  # a leaf of autograd: stepped in place through an alias
            params = params.detach()  # (cheaper than torch.no_grad())
        if frozen:  # the frozen rows, put back after a step of every row
            rows = torch.tensor(frozen, device=self.device)
            kept = [(t, t.index_select(0, rows)) for t in (params, *self.state.values())]
        self.apply(params, grads)
        if frozen:
            for t, rows_before in kept:
                t.index_copy_(0, rows, rows_before)

    def state_dict(self, k: int) -> dict:
        """Member k's state alone: its step count, lr and rows of the state tensors (those
        its algorithm has: no momentum buffer without momentum, as torch.optim)."""
        rows = {
            name: t[k].clone() for name, t in self.state.items() if (name, k) not in self.unused
        }
        return {"step": self.steps[k], "lr": float(self.lr[k, 0]), "state": rows}

    def load_state_dict(self, k: int, state: dict) -> None:
        ours = sorted(name for name in self.state if (name, k) not in self.unused)
        if sorted(state["state"]) != ours:
            theirs = sorted(state["state"])
            raise ValueError(f"an optimizer state of {theirs} does not fit one of {ours}")
        for name, row in state["state"].items():
            self.state[name][k].copy_(row)
        self.steps[k] = int(state["step"])
        self.lr[k, 0] = float(state["lr"])


def _host(active) -> list:
    return active.tolist() if hasattr(active, "tolist") else list(active)


def build_update(cfgs: Sequence[Optim], params: torch.Tensor, decayed=None) -> Update:
    """The step of a population whose members' configs are `cfgs` (options that share one
    update: sgd and gd may mix) and whose parameters are the rows of `params` (K, P); weight
    decay only where `decayed` (P,) is true (None: everywhere)."""
    kinds = {type(cfg).update for cfg in cfgs}
    if len(kinds) != 1:
        names = sorted({cfg.name for cfg in cfgs})
        raise ValueError(f"one population, one optimizer: got optim={', '.join(names)}")
    return kinds.pop()(cfgs, params, decayed)


# --- optimizers: each option's `torch_class` is the torch.optim class it configures, its
# knobs the fields under their PyTorch names, `update` its step for a population --------------


@dataclass
class Optim:
    name: str = MISSING
    lr: float = 0.01
    # lambda, with PyTorch's meaning: coupled L2 (added to the gradient) in sgd, adam, rmsprop
    # and adagrad; decoupled (the weights shrink directly) in adamw.
    weight_decay: float = 0.0
    # false: biases and norm-layer parameters go into a param group with no decay.
    decay_norm_and_bias: bool = True
    torch_class = ""  # (not a config key)
    update = Update  # (not a config key) the option's step for a population

    def knobs(self) -> dict:
        """The hyperparameters under PyTorch's names: the torch optimizer's keyword arguments,
        and each member's in a population's update."""
        return knobs(self, "decay_norm_and_bias")

    def build(self, groups: list[dict]):
        cls = getattr(torch.optim, self.torch_class)
        return cls(groups, **self.knobs())

    def check(self) -> None:
        """The values PyTorch's optimizers would refuse with a traceback, refused in one line."""
        need(self.lr > 0, "optim.lr", self.lr, "a learning rate > 0")
        decay = self.weight_decay
        need(decay >= 0, "optim.weight_decay", decay, "a weight decay >= 0")


class SGDUpdate(Update):
    """torch.optim.SGD's step."""

    def setup(self, params):
        self.nesterov = self.same("nesterov")
        momentum, dampening = self.knob("momentum"), self.knob("dampening")
        self.momentum = self.buf = None
        if any(momentum):
            used = [m != 0 for m in momentum]
            self.buf = self.buffer("momentum_buffer", params, used=used)
            # A member without momentum (torch keeps no buffer) has its gradient there.
            self.kept = [0.0 if m == 0 else m for m in momentum]
            self.added = [
                1.0 if m == 0 else 1 - d for m, d in zip(momentum, dampening, strict=True)
            ]
            self.momentum = self.column(momentum)
            self.kept_column, self.added_column = self.column(self.kept), self.column(self.added)
        # torch's fused step (torch.optim.SGD(fused=True)) makes one pass over the rows where
        # the step by columns makes three or four. It takes scalars, so members whose knobs
        # agree share a call; it rounds as torch's single-tensor step except in the scalar
        # loop of its last few entries, which the step by columns takes instead. Measured on
        # the lesson net (1 thread): 2-3x faster with weight decay from 2 members on; without,
        # only with momentum and from FUSED_FROM_MEMBERS members (its comment says why), and
        # never without momentum, where the step by columns is one pass (38 us against 53 at
        # 4 members, 72 against 90 at 8). (Weight decay on some parameters only is left to
        # the step by columns.)
        self.fused = getattr(torch, "_fused_sgd_", None)
        if self.weight_decay is None and (self.buf is None or self.k < FUSED_FROM_MEMBERS):
            self.fused = None
        if self.weight_decay is not None and self.decayed is not None:
            self.fused = None
        self.cut = params.shape[1] // FUSED_MULTIPLE * FUSED_MULTIPLE
        self._calls_key, self._calls = None, []

    def apply(self, params, grads):
        first = [s == 1 for s in self.steps]  # torch's first step: buffer = gradient
        if self.fused is not None and self.cut:
            try:
                self._fused(params, grads, first)
            except (RuntimeError, NotImplementedError):  # a torch without it on this device
                self.fused = None  # (it fails before it writes anything)
            else:
                if self.cut < params.shape[1]:
                    tail = slice(self.cut, None)
                    buf = None if self.buf is None else self.buf[:, tail]
                    self._by_columns(params[:, tail], grads[:, tail], buf, first, scratch=2)
                return
        self._by_columns(params, grads, self.buf, first)

    def _by_columns(self, params, grads, buf, first: list[bool], scratch: int = 0):
        grad = self.coupled_decay(params, grads, scratch)
        if buf is not None:
            if all(first):
                buf.copy_(grad)
            else:
                kept, added = self.kept_column, self.added_column
                if any(first):  # and members whose first step comes later (frozen until now)
                    kept = self.column(
                        [0.0 if f else m for f, m in zip(first, self.kept, strict=True)]
                    )
                    added = self.column(
                        [1.0 if f else a for f, a in zip(first, self.added, strict=True)]
                    )
                buf.mul_(kept).addcmul_(grad, added)
            if self.nesterov:
                grad = torch.addcmul(grad, buf, self.momentum, out=self.scratch(scratch + 1, grad))
            else:
                grad = buf
        params.addcmul_(grad, self.neg_lr)

    def _fused(self, params, grads, first: list[bool]):
        """The step of the first `cut` entries of each row, in a fused call for each set of
        members whose knobs (and lr, and whether it is their `first` step) agree."""
        key = (params.data_ptr(), grads.data_ptr(), tuple(self.lrs), tuple(first))
        if key != self._calls_key:  # the calls change with the lr, and after the first step
            self._calls_key, calls = key, {}
            for i, knobs in enumerate(self.knobs):
                momentum = knobs["momentum"]
                scalars = (
                    knobs["weight_decay"],
                    momentum,
                    knobs["dampening"],
                    self.lrs[i],
                    first[i] and momentum != 0,
                )
                rows = calls.setdefault(scalars, ([], [], []))
                rows[0].append(params[i, : self.cut])
                rows[1].append(grads[i, : self.cut])
                if momentum != 0:
                    rows[2].append(self.buf[i, : self.cut])
            self._calls = list(calls.items())
        for (decay, momentum, dampening, lr, first_step), rows in self._calls:
            self.fused(
                *rows,
                weight_decay=decay,
                momentum=momentum,
                lr=lr,
                dampening=dampening,
                nesterov=self.nesterov,
                maximize=False,
                is_first_step=first_step,
            )


# The fused step's vector loop takes 8 (AVX2) or 16 (AVX-512) floats at a time: a length that
# is a multiple of this never reaches its scalar loop.
FUSED_MULTIPLE = 64
# Without weight decay, with momentum, the fused step pays from this many members: at 4, the
# step alone took 80-89 us against 98 by columns, and a population of 4 trained in 0.94x the
# time (median of 5 pairs, 0.83-1.01); at 2 the two are even, at 1 its tail makes it slower.
FUSED_FROM_MEMBERS = 4


@option("optim")
@dataclass
class SGD(Optim):
    name: str = "sgd"
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    torch_class = "SGD"
    update = SGDUpdate

    def check(self) -> None:
        super().check()
        need(self.momentum >= 0, "optim.momentum", self.momentum, "a momentum >= 0")
        need(
            not self.nesterov or (self.momentum > 0 and self.dampening == 0),
            "optim.nesterov",
            self.nesterov,
            "true only with optim.momentum > 0 and optim.dampening=0",
        )


@option("optim")
@dataclass
class GD(SGD):
    """Plain (stochastic) gradient descent: torch.optim.SGD without momentum."""

    name: str = "gd"

    def check(self) -> None:
        super().check()
        m = self.momentum
        need(m == 0, "optim.momentum", m, "0 with optim=gd; optim=sgd has one")


class AdamUpdate(Update):
    """torch.optim.Adam's step (AdamW's with `decoupled`)."""

    decoupled = False

    def setup(self, params):
        self.amsgrad = self.same("amsgrad")
        self.beta1, self.beta2 = (list(b) for b in zip(*self.knob("betas"), strict=True))
        self.one_minus_beta1 = self.column([1 - b for b in self.beta1])
        self.beta2_column = self.column(self.beta2)
        self.one_minus_beta2 = self.column([1 - b for b in self.beta2])
        self.eps = self.column(self.knob("eps"))
        self.exp_avg = self.buffer("exp_avg", params)
        self.exp_avg_sq = self.buffer("exp_avg_sq", params)
        if self.amsgrad:
            self.max_exp_avg_sq = self.buffer("max_exp_avg_sq", params)
        self.shrink = None
        if self.decoupled:
            self.weight_decay = None  # not added to the gradient: the weights shrink

    def on_lr(self, lrs):
        super().on_lr(lrs)
        decay = self.knob("weight_decay")
        if self.decoupled and any(decay):
            shrink = self.column([1 - lr * wd for lr, wd in zip(lrs, decay, strict=True)])
            self.shrink = shrink if self.decayed is None else torch.where(self.decayed, shrink, 1.0)

    def apply(self, params, grads):
        if self.shrink is not None:
            params.mul_(self.shrink)
        grad = self.coupled_decay(params, grads)
        self.exp_avg.lerp_(grad, self.one_minus_beta1)
        scaled = torch.mul(grad, self.one_minus_beta2, out=self.scratch(1, grad))
        self.exp_avg_sq.mul_(self.beta2_column).addcmul_(grad, scaled)
        # Step t's scalars, in double as torch computes them (a frozen member's are unused).
        t = [float(max(s, 1)) for s in self.steps]
        scalars = self.column(
            [
                (-(lr / (1 - b1**s)), (1 - b2**s) ** 0.5)
                for lr, b1, b2, s in zip(self.lrs, self.beta1, self.beta2, t, strict=True)
            ]
        )
        second = self.exp_avg_sq
        if self.amsgrad:
            second = torch.maximum(self.max_exp_avg_sq, second, out=self.max_exp_avg_sq)
        denom = torch.sqrt(second, out=self.scratch(1, grad))
        denom.div_(scalars[:, 1:]).add_(self.eps)
        stepped = torch.mul(self.exp_avg, scalars[:, :1], out=self.scratch(2, grad))
        params.addcdiv_(stepped, denom)


class AdamWUpdate(AdamUpdate):
    """torch.optim.AdamW's step: Adam's, with the weight decay decoupled."""

    decoupled = True


@option("optim")
@dataclass
class Adam(Optim):
    name: str = "adam"
    lr: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False
    torch_class = "Adam"
    update = AdamUpdate

    def check(self) -> None:
        super().check()
        need(self.eps > 0, "optim.eps", self.eps, "an epsilon > 0")
        need(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "optim.betas",
            self.betas,
            "[beta1, beta2], each in [0, 1)",
        )


@option("optim")
@dataclass
class AdamW(Adam):
    name: str = "adamw"
    weight_decay: float = 0.01  # PyTorch's default for AdamW
    torch_class = "AdamW"
    update = AdamWUpdate


class RMSpropUpdate(Update):
    """torch.optim.RMSprop's step."""

    def setup(self, params):
        self.centered = self.same("centered")
        alpha, momentum = self.knob("alpha"), self.knob("momentum")
        self.alpha = self.column(alpha)
        self.one_minus_alpha = self.column([1 - a for a in alpha])
        self.eps = self.column(self.knob("eps"))
        self.square_avg = self.buffer("square_avg", params)
        if self.centered:
            self.grad_avg = self.buffer("grad_avg", params)
        self.momentum = self.with_momentum = None
        if any(m > 0 for m in momentum):
            used = [m > 0 for m in momentum]
            self.buf = self.buffer("momentum_buffer", params, used=used)
            self.momentum = self.column(momentum)
            if not all(m > 0 for m in momentum):  # and members without, stepped as torch does
                self.with_momentum = self.column([m > 0 for m in momentum]).bool()

    def apply(self, params, grads):
        grad = self.coupled_decay(params, grads)
        scaled = torch.mul(grad, self.one_minus_alpha, out=self.scratch(1, grad))
        self.square_avg.mul_(self.alpha).addcmul_(grad, scaled)
        avg = self.scratch(1, grad)
        if self.centered:
            self.grad_avg.lerp_(grad, self.one_minus_alpha)
            torch.addcmul(self.square_avg, self.grad_avg, self.grad_avg, value=-1, out=avg)
            avg.sqrt_()
        else:
            torch.sqrt(self.square_avg, out=avg)
        avg.add_(self.eps)
        plain = None  # torch's step without momentum: param + (-lr * grad) / avg
        if self.momentum is None or self.with_momentum is not None:
            plain = torch.mul(grad, self.neg_lr, out=self.scratch(2, grad))
        if self.momentum is None:
            params.addcdiv_(plain, avg)
            return
        self.buf.mul_(self.momentum).addcdiv_(grad, avg)
        if self.with_momentum is None:
            params.addcmul_(self.buf, self.neg_lr)
        else:  # each member by its own rule
            plain = torch.addcdiv(params, plain, avg, out=plain)
            params.addcmul_(self.buf, self.neg_lr)
            torch.where(self.with_momentum, params, plain, out=params)


@option("optim")
@dataclass
class RMSprop(Optim):
    name: str = "rmsprop"
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False
    torch_class = "RMSprop"
    update = RMSpropUpdate

    def check(self) -> None:
        super().check()
        need(self.momentum >= 0, "optim.momentum", self.momentum, "a momentum >= 0")
        need(self.eps > 0, "optim.eps", self.eps, "an epsilon > 0")
        need(0 <= self.alpha < 1, "optim.alpha", self.alpha, "a smoothing constant in [0, 1)")


class AdagradUpdate(Update):
    """torch.optim.Adagrad's step."""

    def setup(self, params):
        self.lr_decay = self.knob("lr_decay")
        self.eps = self.column(self.knob("eps"))
        start = self.column(self.knob("initial_accumulator_value"))
        self.sum = self.buffer("sum", params, fill=start)

    def apply(self, params, grads):
        grad = self.coupled_decay(params, grads)
        neg_clr = self.neg_lr
        if any(self.lr_decay):  # lr / (1 + (t - 1) * lr_decay), in double as torch has it
            steps = zip(self.lrs, self.steps, self.lr_decay, strict=True)
            neg_clr = self.column([-(lr / (1 + (max(s, 1) - 1) * d)) for lr, s, d in steps])
        self.sum.addcmul_(grad, grad)
        std = torch.sqrt(self.sum, out=self.scratch(1, grad)).add_(self.eps)
        params.addcdiv_(torch.mul(grad, neg_clr, out=self.scratch(2, grad)), std)


@option("optim")
@dataclass
class Adagrad(Optim):
    name: str = "adagrad"
    lr_decay: float = 0.0
    eps: float = 1e-10
    initial_accumulator_value: float = 0.0
    torch_class = "Adagrad"
    update = AdagradUpdate

    def check(self) -> None:
        super().check()
        need(self.eps > 0, "optim.eps", self.eps, "an epsilon > 0")
        need(self.lr_decay >= 0, "optim.lr_decay", self.lr_decay, "a decay >= 0")
        value = self.initial_accumulator_value
        need(value >= 0, "optim.initial_accumulator_value", value, "a value >= 0")


# --- penalties ------------------------------------------------------------------------------


@dataclass
class Reg:
    """Explicit penalties added to the training objective (not to the logged data loss)."""

    l1: float = 0.0  # l1 * sum |w|
    l2: float = 0.0  # (l2 / 2) * sum w^2
    include_bias: bool = False  # also penalize biases and norm-layer parameters

    def check(self) -> None:
        need(self.l1 >= 0, "reg.l1", self.l1, "a penalty strength >= 0")
        need(self.l2 >= 0, "reg.l2", self.l2, "a penalty strength >= 0")


@functools.cache
def _binary_cross_entropy() -> type:
    """The bce loss class, defined on first use (a torch.nn subclass needs torch imported)."""

    class BinaryCrossEntropy(nn.BCEWithLogitsLoss):
        """Binary cross-entropy of one logit per example against 0/1 class labels. The sigmoid
        is inside the loss (log-sum-exp), which is numerically stable where sigmoid-then-log
        is not."""

        def forward(self, logits, target):
            return super().forward(logits.squeeze(1), target.to(logits.dtype))

    return BinaryCrossEntropy


# loss= -> its torch.nn loss class
LOSSES: dict[str, Callable[[], type]] = {
    "mse": lambda: nn.MSELoss,
    "l1": lambda: nn.L1Loss,
    "smooth_l1": lambda: nn.SmoothL1Loss,
    "ce": lambda: nn.CrossEntropyLoss,
    "bce": _binary_cross_entropy,
}

# Which losses fit which task; `auto` takes the first.
LOSSES_FOR = {"regression": ["mse", "l1", "smooth_l1"], "classification": ["ce", "bce"]}


def param_groups(model: nn.Module, decay_norm_and_bias: bool = True) -> list[dict]:
    """The model's parameters as optimizer param groups: one group, or, without decay on
    biases and norm parameters, the weights in one group and the rest in a group with
    weight_decay 0."""
    params = list(model.parameters())
    if decay_norm_and_bias:
        return [{"params": params}]
    decayed = {id(w) for w in weights(model)}
    groups = [
        {"params": [p for p in params if id(p) in decayed]},
        {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: Optim):
    return cfg.build(param_groups(model, cfg.decay_norm_and_bias))


def build_scheduler(optimizer, cfg: Sched, epochs: int):
    """The scheduler `cfg` names, or None; cosine's T_max=null spans the `epochs` of the run."""
    return cfg.build(optimizer, epochs)


def build_penalty(regs: Sequence[Reg], stack) -> Penalty | None:
    """The members' reg.l1 and reg.l2 penalties over the population `stack`'s weights (all its
    parameters with include_bias), to add to the objective; None when all are 0."""
    if not any(r.l1 or r.l2 for r in regs):
        return None
    from regexp.stack import weight_mask  # (torch, which composing a config never imports)

    flat = stack.flat
    column = lambda key: torch.tensor(  # noqa: E731
        [[float(getattr(r, key))] for r in regs], dtype=flat.dtype, device=flat.device
    )
    mask = weight_mask(stack, include_all=regs[0].include_bias)
    return Penalty(column("l1"), column("l2"), mask, [bool(r.l1 or r.l2) for r in regs])


def resolve_loss(name: str, task: str, n_outputs: int) -> str:
    """The loss `name` means for a `task` with `n_outputs` (targets or classes); refuses a
    loss that does not fit, before anything is built."""
    fitting = LOSSES_FOR[task]
    if name == "auto":
        return fitting[0]
    if name not in fitting:
        raise ConfigError("loss", name, f"one that fits a {task} task: {', '.join(fitting)}")
    if name == "bce" and n_outputs != 2:
        raise ConfigError(
            "loss", name, f"a loss for {n_outputs} classes: ce (bce is for 2 classes)"
        )
    return name


def model_outputs(name: str, task: str, n_outputs: int) -> int:
    """How many outputs the model needs for loss `name`: bce takes one logit for two classes."""
    return 1 if resolve_loss(name, task, n_outputs) == "bce" else n_outputs


def build_loss(name: str, task: str, n_outputs: int, reduction: str = "mean") -> nn.Module:
    """The loss `name` names; `auto` picks mse for regression and ce for classification. A
    population's loss is unreduced (reduction none): each member's is its own mean."""
    return LOSSES[resolve_loss(name, task, n_outputs)]()(reduction=reduction)


@dataclass
class Penalty:
    """reg.l1 * sum|w| + (reg.l2 / 2) * sum w^2 per member, over the entries `mask` marks (the
    weights, or every parameter with reg.include_bias); `l1` and `l2` are (K, 1)."""

    l1: torch.Tensor
    l2: torch.Tensor
    mask: torch.Tensor  # (P,), 1 where penalized
    on: list[bool]  # the members with a penalty (the others add 0 and log none)

    def value(self, flat: torch.Tensor) -> torch.Tensor:
        w = flat * self.mask
        return (self.l1 * w.abs()).sum(1) + (self.l2 / 2 * w * w).sum(1)

    def add_grad(self, flat: torch.Tensor, grad: torch.Tensor) -> None:
        """Its gradient, l1 * sign(w) + l2 * w, added to `grad` (no autograd needed). Each op
        takes a (K, 1) column, so that torch runs it row by row: over (K, P) operands alone it
        would run them as one vector, whose scalar tail would fall on other entries of a member
        than alone (and round them apart, where the vector code fuses a multiply-add)."""
        grad.addcmul_(torch.sign(flat) * self.mask, self.l1).addcmul_(flat * self.mask, self.l2)

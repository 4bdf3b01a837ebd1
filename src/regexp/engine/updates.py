"""The stacked optimizers: each optimizer option's step for a population (`Update`), which
replays torch.optim's step over K members at once, and the L1/L2 penalties added to the
objective. The options' schemas, and the torch.optim optimizers they configure, are in
components/optim.py.

Why it is long: each optimizer's step is torch.optim's, operation for operation, and reads
best beside the others it shares its rounding rules with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from regexp.components.optim import Optim, Reg
from regexp.engine.stack import weight_mask


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
            mine = self.state[name][k]
            if row.shape != mine.shape or row.dtype != mine.dtype:  # (copy_ would broadcast)
                raise ValueError(
                    f"an optimizer state {name} of {tuple(row.shape)} {row.dtype} does not fit "
                    f"one of {tuple(mine.shape)} {mine.dtype}"
                )
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
    kinds = {UPDATES[cfg.torch_class] for cfg in cfgs}
    if len(kinds) != 1:
        names = sorted({cfg.name for cfg in cfgs})
        raise ValueError(f"one population, one optimizer: got optim={', '.join(names)}")
    return kinds.pop()(cfgs, params, decayed)


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
        # loop of its last few entries, which the step by columns takes instead. It pays with
        # weight decay from 2 members on; without, only with momentum and from
        # FUSED_FROM_MEMBERS members, and never without momentum, where the step by columns is
        # one pass (scripts/bench_update.py measures it). (Weight decay on some parameters only
        # is left to the step by columns.)
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


# Without weight decay, with momentum, the fused step pays from this many members
# (scripts/bench_update.py): at 2 the two steps are even, at 1 the fused step's tail makes it
# slower.
FUSED_FROM_MEMBERS = 4


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


def build_penalty(regs: Sequence[Reg], stack) -> Penalty | None:
    """The members' reg.l1 and reg.l2 penalties over the population `stack`'s weights (all its
    parameters with include_bias), to add to the objective; None when all are 0."""
    if not any(r.l1 or r.l2 for r in regs):
        return None
    flat = stack.flat
    column = lambda key: torch.tensor(  # noqa: E731
        [[float(getattr(r, key))] for r in regs], dtype=flat.dtype, device=flat.device
    )
    mask = weight_mask(stack, include_all=regs[0].include_bias)
    return Penalty(column("l1"), column("l2"), mask, [bool(r.l1 or r.l2) for r in regs])


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


# Each option's step, by the torch.optim class it configures (sgd and gd share one).
UPDATES = {
    "SGD": SGDUpdate,
    "Adam": AdamUpdate,
    "AdamW": AdamWUpdate,
    "RMSprop": RMSpropUpdate,
    "Adagrad": AdagradUpdate,
}

"""The No-U-Turn Sampler for many chains at once: iterative trees with per-chain masks, chains that do not wait.

NUTS (Hoffman & Gelman 2014, "The No-U-Turn Sampler", JMLR 15, Algorithm 3) in the
multinomial form of Stan and NumPyro (Betancourt 2017, "A conceptual introduction to
Hamiltonian Monte Carlo", arXiv:1701.02434, Appendix A):

* a trajectory doubles in a random direction until it makes a U-turn, diverges or
  reaches ``max_tree_depth`` doublings;
* points are weighted by ``exp(-H)``; inside a new subtree each leaf replaces the
  subtree's proposal with probability ``w_leaf / W_subtree`` (uniform progressive
  sampling), and a finished subtree replaces the tree's proposal with probability
  ``min(1, W_subtree / W_tree_old)`` (biased progressive sampling);
* the generalized no-U-turn criterion (Betancourt 2017, A.4.2): a (sub)trajectory with
  momentum sum ``rho`` and end momenta ``p_l, p_r`` turns when
  ``(S p_l) . (rho - (p_l + p_r)/2) <= 0`` or ``(S p_r) . (rho - (p_l + p_r)/2) <= 0``,
  checked for the whole tree after each doubling and, inside a subtree, for every
  sub-subtree that ends at the new leaf, using ``O(max_tree_depth)`` checkpoints of
  momenta and momentum sums (the iterative formulation of NumPyro, Phan, Pradhan &
  Jankowiak 2019, "Composable effects for flexible and accelerated probabilistic
  programming in NumPyro", arXiv:1912.11554);
* a leaf with ``H - H_0 > max_delta_energy`` (1000) is divergent and ends the tree;
  the acceptance statistic is the mean of ``min(1, exp(H_0 - H))`` over all leaves.

Vectorization.  Every chain carries its own tree (depth, leaf counter, subtree
direction, checkpoints) as rows of ``(chains, ...)`` tensors, and one *micro-step*
adds one leaf to every active chain's tree: one batched gradient evaluation, every
branch a ``torch.where``.  With ``asynchronous=True`` (default) a chain whose tree is
finished stores its draw in a small per-chain queue and starts its next transition at
once, so the cost of ``N`` transitions is about the *largest total* number of leaves
of one chain, not the sum over iterations of the largest tree of the batch (what a
lock-step ``vmap`` pays).  During warm-up the chains run in lock-step: dual averaging
needs the acceptance statistics of the step size it just set (a lag of a few
iterations makes it oscillate by orders of magnitude).  Each chain's own sequence of transitions is unchanged by
this scheduling, so every chain is an exact NUTS chain; ``step`` returns the next
queued transition of every chain.  The pipeline restarts (transitions in flight are
dropped) when ``step`` is called with another state than the one it returned last or
when the metric changes, which only happens during warm-up.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .. import _random
from ..errors import ParameterError
from ..targets.base import Target
from .adaptation import Adaptation
from .kernels import Kernel, State, StepInfo
from .metric import Metric

__all__ = ["NUTS"]


def _turning(metric: Metric, r_left: torch.Tensor, r_right: torch.Tensor, r_sum: torch.Tensor) -> torch.Tensor:
    """Generalized no-U-turn criterion (Betancourt 2017, A.4.2); ``(..., dim) -> (...)`` bool."""
    rho = r_sum - 0.5 * (r_left + r_right)
    return ((metric.velocity(r_left) * rho).sum(-1) <= 0) | ((metric.velocity(r_right) * rho).sum(-1) <= 0)


def _popcount(v: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    return ((v.unsqueeze(-1) & bits) != 0).sum(-1)


def checkpoint_range(leaf: torch.Tensor, bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Checkpoints ``[idx_min, idx_max]`` to check when leaf number ``leaf`` (0-based) joins its subtree.

    ``idx_max`` is the number of set bits of ``leaf >> 1`` and ``idx_max - idx_min + 1`` the
    number of trailing ones of ``leaf``: the sub-subtrees of sizes 2, 4, ... that end at this
    leaf (NumPyro's ``_leaf_idx_to_ckpt_idxs``).  An even leaf has an empty range.
    """
    idx_max = _popcount(leaf >> 1, bits)
    trailing_ones = _popcount(leaf ^ (leaf + 1), bits) - 1
    return idx_max - trailing_ones + 1, idx_max


def _checkpoint_tables(max_depth: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For every leaf number ``n < 2^(max_depth - 1)``: the checkpoints to check (``(N, K)`` bool, empty for even
    ``n``) and the checkpoint an even leaf is stored in (``(N, K)`` one-hot, empty for odd ``n``)."""
    bits = 2 ** torch.arange(max_depth + 2, device=device)
    leaf = torch.arange(2 ** max(max_depth - 1, 0), device=device)
    idx_min, idx_max = checkpoint_range(leaf, bits)
    k = torch.arange(max_depth, device=device)
    odd = (leaf & 1) == 1
    check = (k >= idx_min.unsqueeze(-1)) & (k <= idx_max.unsqueeze(-1)) & odd.unsqueeze(-1)
    store = (k == idx_max.unsqueeze(-1)) & ~odd.unsqueeze(-1)
    return check, store


class _Trees:
    """Per-chain state of the iterative trees; a phase-space point is one row ``[z | p | grad | log_prob | H]``."""

    def __init__(self, x: torch.Tensor, max_depth: int) -> None:
        c, d = x.shape
        self.d, self.k = d, max_depth
        w = 3 * d + 2
        z = lambda *s: torch.zeros(*s, dtype=x.dtype, device=x.device)  # noqa: E731
        self.left, self.right, self.prop = z(c, w), z(c, w), z(c, w)
        self.edge, self.sub_prop = z(c, w), z(c, w)
        self.h0, self.weight, self.sub_weight = z(c), z(c), z(c)
        self.acc, self.sub_acc, self.eps = z(c), z(c), z(c)
        self.step, self.half_step = z(c, 1), z(c, 1)
        self.r_sum, self.sub_r_sum = z(c, d), z(c, d)
        self.r_ckpt, self.r_sum_ckpt = z(c, max_depth, d), z(c, max_depth, d)
        long = lambda: torch.zeros(c, dtype=torch.long, device=x.device)  # noqa: E731
        self.depth, self.leaves, self.sub_leaves, self.sub_size = long(), long(), long(), long()
        false = lambda: torch.zeros(c, dtype=torch.bool, device=x.device)  # noqa: E731
        self.active, self.forward, self.divergent, self.moved = false(), false(), false(), false()
        self.check_table, self.store_table = _checkpoint_tables(max_depth, x.device)
        self.metric: Metric | None = None
        self.generator: torch.Generator | None = None

    def point(self, x: torch.Tensor, p: torch.Tensor, g: torch.Tensor, lp: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, p, g, lp.unsqueeze(-1), h.unsqueeze(-1)], -1)

    def parts(self, pt: torch.Tensor) -> tuple[torch.Tensor, ...]:
        d = self.d
        return pt[:, :d], pt[:, d : 2 * d], pt[:, 2 * d : 3 * d], pt[:, 3 * d], pt[:, 3 * d + 1]

    def start(self, mask: torch.Tensor, x: torch.Tensor, lp: torch.Tensor, g: torch.Tensor,
              eps: torch.Tensor, metric: Metric, generator: torch.Generator | None) -> None:
        """Begin a new transition from ``(x, lp, g)`` for the chains in ``mask``: fresh momentum, a one-point tree."""
        p = metric.sample_momentum(x, generator)
        h = metric.kinetic(p) - lp
        pt = self.point(x, p, g, lp, h)
        m1 = mask.unsqueeze(-1)
        self.left = torch.where(m1, pt, self.left)
        self.right = torch.where(m1, pt, self.right)
        self.prop = torch.where(m1, pt, self.prop)
        self.r_sum = torch.where(m1, p, self.r_sum)
        self.h0 = torch.where(mask, h, self.h0)
        self.weight = self.weight.masked_fill(mask, 0.0)
        self.acc = self.acc.masked_fill(mask, 0.0)
        self.eps = torch.where(mask, eps, self.eps)
        self.depth = self.depth.masked_fill(mask, 0)
        self.leaves = self.leaves.masked_fill(mask, 0)
        self.divergent = self.divergent & ~mask
        self.moved = self.moved & ~mask
        self.active = self.active | mask
        self.metric, self.generator = metric, generator
        self.next_subtree(mask)

    def next_subtree(self, mask: torch.Tensor) -> None:
        """Chains in ``mask`` start a subtree of ``2^depth`` leaves in a random direction, from that end of the tree."""
        fwd = _random.rand(mask.shape, generator=self.generator, dtype=self.h0.dtype, device=mask.device) < 0.5
        self.forward = torch.where(mask, fwd, self.forward)
        end = torch.where(self.forward.unsqueeze(-1), self.right, self.left)
        self.edge = torch.where(mask.unsqueeze(-1), end, self.edge)
        self.step = torch.where(self.forward, self.eps, -self.eps).unsqueeze(-1)
        self.half_step = 0.5 * self.step
        self.sub_weight = self.sub_weight.masked_fill(mask, -math.inf)
        self.sub_r_sum = self.sub_r_sum.masked_fill(mask.unsqueeze(-1), 0.0)
        self.sub_acc = self.sub_acc.masked_fill(mask, 0.0)
        self.sub_leaves = self.sub_leaves.masked_fill(mask, 0)
        self.sub_size = torch.where(mask, torch.bitwise_left_shift(1, self.depth), self.sub_size)

    def micro_step(self, log_prob_and_grad: Callable, max_delta_energy: float) -> torch.Tensor:
        """Add one leaf to every active chain's tree; returns the chains whose transition just finished.

        Rows of inactive chains are updated too (one batched computation) and reset before reuse.
        """
        metric, d, active = self.metric, self.d, self.active
        assert metric is not None
        u = _random.rand((2, *active.shape), generator=self.generator, dtype=self.h0.dtype, device=active.device)
        # one leapfrog step from the subtree's outer point, in its direction (Neal 2011, eqs. 5.18-5.20)
        z, r, g, _, _ = self.parts(self.edge)
        r_half = r + self.half_step * g
        z1 = z + self.step * metric.velocity(r_half)
        lp1, g1 = log_prob_and_grad(z1)
        r1 = r_half + self.half_step * g1
        h1 = metric.kinetic(r1) - lp1
        leaf = self.edge = self.point(z1, r1, g1, lp1, h1)
        delta = torch.nan_to_num(h1 - self.h0, nan=math.inf)
        leaf_div = delta > max_delta_energy
        # uniform progressive sampling inside the subtree: the leaf replaces the proposal w.p. w_leaf / W_subtree
        take = u[0] < torch.sigmoid(-delta - self.sub_weight)
        self.sub_prop = torch.where(take.unsqueeze(-1), leaf, self.sub_prop)
        self.sub_weight = torch.logaddexp(self.sub_weight, -delta)
        sub_r_sum = self.sub_r_sum = self.sub_r_sum + r1
        self.sub_acc = self.sub_acc + torch.exp(torch.clamp(-delta, max=0.0))
        # U-turns of the sub-subtrees ending at this leaf, from the checkpoints
        n = self.sub_leaves
        store = self.store_table[n].unsqueeze(-1)
        self.r_ckpt = torch.where(store, r1.unsqueeze(1), self.r_ckpt)
        self.r_sum_ckpt = torch.where(store, sub_r_sum.unsqueeze(1), self.r_sum_ckpt)
        spans = sub_r_sum.unsqueeze(1) - self.r_sum_ckpt + self.r_ckpt
        sub_turn = (_turning(metric, self.r_ckpt, r1.unsqueeze(1), spans) & self.check_table[n]).any(-1)
        self.sub_leaves = n = n + active.long()
        done = active & (sub_turn | leaf_div | (n == self.sub_size))
        if not bool(done.any()):
            return done
        # a finished subtree joins the tree (biased progressive sampling)
        valid = ~sub_turn & ~leaf_div
        p_join = torch.exp(torch.clamp(self.sub_weight - self.weight, max=0.0)).masked_fill(~valid, 0.0)
        join = done & (u[1] < p_join)
        self.prop = torch.where(join.unsqueeze(-1), self.sub_prop, self.prop)
        self.moved = self.moved | join
        self.weight = torch.where(done, torch.logaddexp(self.weight, self.sub_weight), self.weight)
        self.right = torch.where((done & self.forward).unsqueeze(-1), leaf, self.right)
        self.left = torch.where((done & ~self.forward).unsqueeze(-1), leaf, self.left)
        self.r_sum = torch.where(done.unsqueeze(-1), self.r_sum + sub_r_sum, self.r_sum)
        self.acc = torch.where(done, self.acc + self.sub_acc, self.acc)
        self.leaves = torch.where(done, self.leaves + n, self.leaves)
        self.depth = self.depth + done.long()
        r_l, r_r = self.left[:, d : 2 * d], self.right[:, d : 2 * d]
        finished = done & (~valid | _turning(metric, r_l, r_r, self.r_sum) | (self.depth >= self.k))
        self.divergent = self.divergent | (finished & leaf_div)
        self.active = active & ~finished
        self.next_subtree(done & ~finished)
        return finished

    def record(self) -> torch.Tensor:
        """One row per chain: the finished tree's draw and statistics, ``[z | p | grad | lp | H | H_0, acc, moved,
        divergent, leaves, eps, depth]`` (rows of chains not finished are stale)."""
        dt = self.h0.dtype
        stats = torch.stack([self.h0, self.acc / self.leaves.clamp(min=1), self.moved.to(dt), self.divergent.to(dt),
                             self.leaves.to(dt), self.eps, self.depth.to(dt)], -1)
        return torch.cat([self.prop, stats], -1)

    def unpack(self, rows: torch.Tensor) -> tuple[State, dict[str, torch.Tensor]]:
        """:meth:`record` rows as the draw and its per-chain statistics."""
        x, _, g, lp, h = self.parts(rows)
        h0, acc, moved, div, leaves, eps, depth = rows[:, 3 * self.d + 2 :].unbind(-1)
        stats = {
            "accept_prob": acc,
            "accepted": moved > 0.5,
            "energy_error": h - h0,
            "divergent": div > 0.5,
            "num_steps": leaves.round().long(),
            "step_size": eps,
            "tree_depth": depth.round().long(),
            "energy": h,
        }
        return State(x, lp, g), stats


class _Queue:
    """Per-chain FIFO of finished transitions (``size`` rows of :meth:`_Trees.record` per chain)."""

    def __init__(self, size: int, num_chains: int, device: torch.device) -> None:
        self.size = size
        self.head = torch.zeros(num_chains, dtype=torch.long, device=device)
        self.count = torch.zeros_like(self.head)
        self.slots = torch.arange(size, device=device).unsqueeze(-1)
        self.cols = torch.arange(num_chains, device=device)
        self.rows: torch.Tensor | None = None

    def push(self, mask: torch.Tensor, rows: torch.Tensor) -> None:
        if self.rows is None:
            self.rows = torch.zeros(self.size, *rows.shape, dtype=rows.dtype, device=rows.device)
        slot = (self.head + self.count) % self.size
        sel = ((self.slots == slot) & mask).unsqueeze(-1)  # (size, chains, 1)
        self.rows = torch.where(sel, rows.unsqueeze(0), self.rows)
        self.count = self.count + mask.long()

    def pop(self) -> torch.Tensor:
        assert self.rows is not None
        out = self.rows[self.head, self.cols]
        self.head = (self.head + 1) % self.size
        self.count = self.count - 1
        return out


class NUTS(Kernel):
    """No-U-Turn Sampler, multinomial variant, run as many chains that do not wait for each other.

    Hoffman & Gelman (2014), "The No-U-Turn Sampler: adaptively setting path lengths in
    Hamiltonian Monte Carlo", JMLR 15, Algorithms 3 and 6, with multinomial sampling and the
    generalized U-turn criterion of Betancourt (2017), as in Stan and NumPyro (see
    :mod:`fokker.mcmc.nuts` for the vectorized scheme).

    Args (beyond :class:`~fokker.mcmc.kernels.Kernel`):
        max_tree_depth: at most ``2^max_tree_depth - 1`` leapfrog steps per transition (default 10).
        max_delta_energy: energy error above which a leaf is divergent (default 1000).
        asynchronous: chains start their next transition as soon as their tree is finished
            (default); ``False`` runs one transition of every chain per :meth:`step`.
        queue_size: how many transitions a chain may run ahead of the slowest one.

    :class:`~fokker.mcmc.StepInfo` per chain: ``accept_prob`` is the mean acceptance
    statistic of the tree's leaves (what dual averaging targets), ``accepted`` whether the
    draw differs from the starting point, ``num_steps`` the leapfrog steps, and ``extra``
    holds ``tree_depth`` and ``energy`` (the Hamiltonian at the draw, for E-BFMI).
    The warm-up is Stan's (:class:`~fokker.mcmc.WindowedAdaptation`, target acceptance 0.8);
    the initial step-size search uses one leapfrog step per trial, as Stan does.
    """

    def __init__(
        self,
        target: Target | Callable | None = None,
        step_size: float | torch.Tensor | None = None,
        max_tree_depth: int = 10,
        metric: str | Metric | torch.Tensor = "diag",
        target_accept: float | None = None,
        adapt_step_size: bool = True,
        adapt_metric: bool = True,
        dim: int | None = None,
        *,
        max_delta_energy: float = 1000.0,
        asynchronous: bool = True,
        queue_size: int = 4,
        adaptation: Adaptation | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(target, step_size, metric, target_accept, adapt_step_size, adapt_metric, dim,
                         adaptation=adaptation, generator=generator)
        if isinstance(max_tree_depth, bool) or not isinstance(max_tree_depth, int) or not 1 <= max_tree_depth <= 30:
            raise ParameterError(f"max_tree_depth must be an integer in [1, 30]; got {max_tree_depth!r}")
        if not (isinstance(max_delta_energy, (int, float)) and max_delta_energy > 0):
            raise ParameterError(f"max_delta_energy must be a positive number; got {max_delta_energy!r}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ParameterError(f"queue_size must be an integer >= 1; got {queue_size!r}")
        self.max_tree_depth = max_tree_depth
        self.max_delta_energy = float(max_delta_energy)
        self.asynchronous = bool(asynchronous)
        self.queue_size = queue_size
        self._trees: _Trees | None = None
        self._queue: _Queue | None = None
        self._last_out: State | None = None

    def __copy__(self) -> "NUTS":
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._trees = new._queue = new._last_out = None  # a copy starts its own pipeline
        return new

    def _eps_per_chain(self, x: torch.Tensor) -> torch.Tensor:
        return self._eps(x).expand(x.shape[0])

    def trial_accept_prob(self, state: State) -> torch.Tensor:
        """Acceptance probability of one leapfrog step from ``state`` with fresh momenta (Stan's step-size search)."""
        m = self._metric_for(state.x)
        e = self._eps_per_chain(state.x).unsqueeze(-1)
        p = m.sample_momentum(state.x, self.generator)
        r_half = p + 0.5 * e * state.grad
        x1 = state.x + e * m.velocity(r_half)
        lp1, g1 = self.log_prob_and_grad(x1)
        r1 = r_half + 0.5 * e * g1
        log_ratio = (lp1 - m.kinetic(r1)) - (state.log_prob - m.kinetic(p))
        return torch.nan_to_num(log_ratio.clamp(max=0.0).exp(), nan=0.0)

    def _info(self, stats: dict[str, torch.Tensor]) -> StepInfo:
        extra = {"tree_depth": stats["tree_depth"], "energy": stats["energy"]}
        return StepInfo(stats["accept_prob"], stats["accepted"], stats["energy_error"], stats["divergent"],
                        stats["num_steps"], stats["step_size"], extra)

    def step(self, state: State) -> tuple[State, StepInfo]:
        """One NUTS transition of every chain (the next finished one, with ``asynchronous=True``)."""
        if self.asynchronous and not self._warming_up:
            return self._step_asynchronous(state)
        x = state.x
        trees = _Trees(x, self.max_tree_depth)
        everyone = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        trees.start(everyone, x, state.log_prob, state.grad, self._eps_per_chain(x), self._metric_for(x), self.generator)
        while bool(trees.active.any()):
            trees.micro_step(self.log_prob_and_grad, self.max_delta_energy)
        new, stats = trees.unpack(trees.record())
        return new, self._info(stats)

    def _step_asynchronous(self, state: State) -> tuple[State, StepInfo]:
        x = state.x
        metric = self._metric_for(x)
        trees, queue = self._trees, self._queue
        if trees is None or queue is None or state is not self._last_out or trees.metric is not metric:
            trees, queue = self._trees, self._queue = _Trees(x, self.max_tree_depth), _Queue(self.queue_size, x.shape[0], x.device)
            everyone = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
            trees.start(everyone, x, state.log_prob, state.grad, self._eps_per_chain(x), metric, self.generator)
        eps = self._eps_per_chain(x)
        d = x.shape[-1]
        while bool((queue.count == 0).any()):
            finished = trees.micro_step(self.log_prob_and_grad, self.max_delta_energy)
            if bool(finished.any()):
                rows = trees.record()
                queue.push(finished, rows)
                restart = finished & (queue.count < queue.size)
                trees.start(restart, rows[:, :d], rows[:, 3 * d], rows[:, 2 * d : 3 * d], eps, metric, self.generator)
        waiting = ~trees.active & (queue.count == queue.size)  # chains stopped on a full queue: room after pop
        result, stats = trees.unpack(queue.pop())
        if bool(waiting.any()):
            rows = trees.record()
            trees.start(waiting, rows[:, :d], rows[:, 3 * d], rows[:, 2 * d : 3 * d], eps, metric, self.generator)
        self._last_out = result
        return result, self._info(stats)

    def __repr__(self) -> str:
        eps = self.step_size if not isinstance(self.step_size, torch.Tensor) or self.step_size.numel() > 1 else float(self.step_size)
        return f"NUTS(step_size={eps}, max_tree_depth={self.max_tree_depth}, metric={'dense' if self.dense else 'diag'})"

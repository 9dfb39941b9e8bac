"""Phase 1: the goal-conditioned Boltzmann human policy prior by backward induction.

For every non-terminal state s (later levels first), human h and goal g:

* g achieved in s: the policy is "stay" (action 0) with probability 1 and V(s, g) = 0;
* otherwise, for each action a of h,
  ``Q(s,a,g) = sum_{a_o} u(a_o) * min_{a_R} sum_j p_j * y_j`` (``max`` when optimistic),
  ``y_j = 1`` if g is achieved in the successor s'_j, else ``delta_j * V(s'_j, g)`` with
  ``delta_j = exp(-rho * duration_j)`` (no factor when rho = 0);
* ``pi(.|s,g) = softmax(beta_h * Q)`` (uniform over exact ties for ``beta_h = inf``) and
  ``V(s,g) = sum_a pi(a) Q(s,a,g)``.

:class:`LevelKernel` evaluates these equations for a batch of states with numpy over
(states x joint actions x goals); every reduction runs in a fixed order per state, so the
result of a state does not depend on which batch, worker or rank computed it (serial,
local-parallel and MPI runs are bit-identical). :func:`backward_induction` runs the
levels: each rank takes its slice of a level by state index, its local workers share
the arrays through :mod:`.shm`, and the new value rows are exchanged with ``Allgatherv``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .dag import Dag
from .goals import GoalSet

# Cap on the float64 scratch array (states x joint actions x goals) of one kernel call.
# 1 MB per scratch array. Measured on the 1e6-state world's kernel (2026-12-01, one rank's
# half, CPU s, min of 8): 65,536 elements 0.60, 131,072 0.50, 196,608 0.47, 262,144 1.06
# (2 MB temporaries: allocated and faulted in afresh per batch). Fewer, bigger batches pay
# less fixed cost per state (the kernel makes ~60 numpy calls per batch).
SCRATCH_ELEMENTS = 131_072


@dataclass(frozen=True)
class Phase1Params:
    """Theory parameters of Phase 1 (see module docstring)."""

    beta_h: float = 10.0
    rho_h: float = 0.0
    optimistic: bool = False
    dtype: str = "float64"

    @staticmethod
    def make(
        beta_h=10.0, gamma_h=None, rho_h=None, optimistic=False, dtype="float64"
    ) -> Phase1Params:
        """Validate and convert ``gamma_h`` (per-step discount) to ``rho_h = -ln(gamma_h)``."""
        beta_h = float(beta_h)
        if math.isnan(beta_h) or beta_h < 0:
            raise ValueError(f"beta_h must be >= 0 (or inf), got {beta_h}")
        if gamma_h is not None and rho_h is not None:
            raise ValueError("give gamma_h or rho_h, not both (rho_h = -ln(gamma_h))")
        if gamma_h is not None:
            gamma_h = float(gamma_h)
            if not 0.0 < gamma_h <= 1.0:
                raise ValueError(f"gamma_h must be in (0, 1], got {gamma_h}")
            rho = -math.log(gamma_h)
        else:
            rho = float(rho_h) if rho_h is not None else 0.0
            if not rho >= 0 or math.isinf(rho):
                raise ValueError(f"rho_h must be a finite number >= 0, got {rho_h}")
        if dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
        return Phase1Params(beta_h, rho, bool(optimistic), dtype)


@dataclass(frozen=True)
class KernelMeta:
    """The small, picklable description a kernel needs besides the arrays."""

    num_agents: int
    num_actions: int
    humans: tuple[int, ...]  # humans with a prior, in column-block order
    robots: tuple[int, ...]
    columns: tuple[tuple[int, int], ...]  # [start, stop) goal columns of each human
    params: Phase1Params
    # False: policy rows are computed (V needs them) but only the root's (state 0) is
    # written: a run that writes no file needs no other (``policy_on="none"``)
    policies: bool = True


def make_uniform_others(num_actions: int, n_others: int) -> float:
    """The default believed-others policy: every joint action of the other humans equally likely."""
    return float(num_actions) ** -n_others


class LevelKernel:
    """Computes V and policy rows of a batch of states, reading and writing ``arrays``.

    ``arrays`` holds the compact DAG arrays (:meth:`.dag.Dag.kernel_arrays`: ``counts``,
    ``state_offsets``, ``succ``, ``prob_table`` + ``prob_idx`` or ``probs``), optional ``delta`` (per outcome),
    ``achieved`` (N x goals, bool), ``V`` (N x goals) and ``P`` (N x goals x actions);
    they may be plain arrays (serial) or shared memory maps (workers).
    """

    def __init__(self, arrays: dict, meta: KernelMeta, believed_others_policy=None, states=None):
        # Plain ndarray views of memory maps: numpy calls on np.memmap pay subclass overhead.
        self.a = {k: np.asarray(v) for k, v in arrays.items()}
        self.meta = meta
        self.believed = believed_others_policy
        self.states = states
        n, nA = meta.num_agents, meta.num_actions
        self.K = nA**n
        p = meta.params
        self.scalar_delta = None
        if "delta" not in arrays and p.rho_h != 0.0:
            self.scalar_delta = math.exp(-p.rho_h)  # every duration is 1
        G = arrays["V"].shape[1]
        self.batch = max(1, SCRATCH_ELEMENTS // max(1, self.K * G))
        # The id of probability 1.0, if any: multiplying by 1.0 changes nothing (exactly),
        # so only the outcomes with another probability (~0.2% in built-in worlds) are
        # multiplied.
        self.one_id = None
        if "prob_idx" in self.a:
            ones = np.flatnonzero(self.a["prob_table"] == 1.0)
            self.one_id = int(ones[0]) if len(ones) else None

    def compute(self, idx: np.ndarray, between: Callable[[], None] | None = None) -> None:
        """Fill ``V[idx]`` and ``P[idx]`` (``idx``: non-terminal states whose successors are done);
        ``between`` is called after every batch (MPI: lets messages in flight progress)."""
        for s in range(0, len(idx), self.batch):
            self._compute(np.asarray(idx[s : s + self.batch], dtype=np.int64))
            if between is not None:
                between()

    def _expected(self, rows) -> np.ndarray:
        """``E[k, s, g] = sum_j p_j y_j`` for every joint action, state and goal column
        (``rows``: the batch's states, a slice or an index array). Joint actions come
        first: the reductions over an agent's actions then read whole contiguous blocks."""
        a, K = self.a, self.K
        length = a["counts"].reshape(-1, K)[rows].ravel()  # outcomes per (state, joint action)
        n = len(length) // K
        # First outcome of every pair: the state's offset plus the outcomes of its earlier
        # pairs (one flat cumulative sum, each row shifted to its own state's offset).
        start = np.cumsum(length, dtype=np.int64)
        start -= length
        base = a["state_offsets"][rows].astype(np.int64)
        base -= start[::K]
        start = start.reshape(n, K)
        start += base[:, None]
        start = start.T.ravel()  # (K, n): pairs joint action first
        length = length.reshape(n, K).T.ravel()
        G = a["V"].shape[1]
        # Outcome j of every (state, joint action) at once; the sum over j runs in outcome
        # order exactly like a scalar loop, whatever the batch. Every pair of a non-terminal
        # state has an outcome, so the sum starts with outcome 0 of all pairs (0 + x == x:
        # the terms are >= +0) and adds the further outcomes of the few pairs that have them.
        if len(length) and int(length.min()) >= 1:
            E, j = self._terms(start), 1
        else:
            E, j = np.zeros((len(length), G)), 0
        more = np.flatnonzero(length > j)  # pairs with an outcome j
        while len(more):
            E[more] += self._terms(start[more] + j)
            j += 1
            more = more[length[more] > j]
        return E.reshape(K, n, G)

    def _terms(self, o: np.ndarray) -> np.ndarray:
        """``p_j * y_j`` of the outcomes ``o`` (one row per outcome, one column per goal).
        Rows are gathered with ``np.take`` (several times faster than fancy indexing of a
        2-D array here; the same values). Indices stay int64: numpy converts int32 index
        arrays to its own index type first (a gather with int32 indices took 1.5-2.2x as
        long, measured)."""
        a = self.a
        s2 = a["succ"][o]
        y = np.take(a["V"], s2, axis=0).astype(np.float64, copy=False)
        if "delta" in a:
            y *= a["delta"][o][:, None]
        elif self.scalar_delta is not None:
            y *= self.scalar_delta
        # y = 1 where the goal is achieved in s': there V(s', g) is 0 (the kernel writes 0
        # for an achieved goal, terminal rows stay 0), and y >= +0 everywhere, so the
        # maximum with the 0/1 flag is exactly that: ~4x faster than copyto(..., where=).
        np.maximum(y, np.take(a["achieved"], s2, axis=0), out=y)
        if "prob_idx" in a:
            ids = a["prob_idx"][o]
            other = np.flatnonzero(ids != self.one_id) if self.one_id is not None else slice(None)
            y[other] *= a["prob_table"].take(ids[other])[:, None]
        else:
            y *= a["probs"][o].astype(np.float64)[:, None]
        return y

    def _compute(self, idx: np.ndarray) -> None:
        meta, p = self.meta, self.meta.params
        n_agents, nA = meta.num_agents, meta.num_actions
        rows = _rows(idx)  # a slice when the batch is a contiguous range of states
        E = self._expected(rows)
        n = len(idx)
        # Joint index k = sum a_i nA^i: in C order the LAST agent axis is agent 0; the
        # state and goal axes follow the agents'.
        E = E.reshape((nA,) * n_agents + E.shape[1:])
        axis_of = {i: n_agents - 1 - i for i in range(n_agents)}
        M_all = E
        for axis in sorted((axis_of[r] for r in meta.robots), reverse=True):
            M_all = _reduce_axis(M_all, axis, np.maximum if p.optimistic else np.minimum)
        # Remaining agent axes, in the order they now appear.
        remaining = [i for i in sorted(range(n_agents), reverse=True) if i not in meta.robots]
        ach_rows = self.a["achieved"][rows]
        act_rows = self.a["active"][rows] if "active" in self.a else None
        for h, (c0, c1) in zip(meta.humans, meta.columns):
            others = [i for i in range(n_agents) if i != h and i not in meta.robots]
            k = len(remaining)  # M_all: (nA,) * k + (n, G)
            order = [remaining.index(h)] + [remaining.index(o) for o in others] + [k, k + 1]
            M = M_all[..., c0:c1].transpose(order)
            n_o = nA ** len(others)
            # (h's action, others in itertools.product order, state, goal): Q[a] is one
            # contiguous block, so the softmax's per-action loops run over whole blocks
            M = M.reshape(nA, n_o, n, c1 - c0)
            # Q = sum_o u_o M_o, summed in o order (starting from the first term: 0 + x == x)
            Q = np.empty((nA, n, c1 - c0))
            if self.believed is None:
                u = make_uniform_others(nA, len(others))
                np.multiply(u, M[:, 0], out=Q)
                for o in range(1, n_o):
                    Q += u * M[:, o]
            else:
                U = self._believed_weights(idx, h, others).transpose(1, 2, 0)  # (a, o, s)
                np.multiply(U[:, 0, :, None], M[:, 0], out=Q)
                for o in range(1, n_o):
                    Q += U[:, o, :, None] * M[:, o]
            pi, V = boltzmann(Q, p.beta_h)  # pi: (nA, n, G_h)
            if act_rows is not None:  # goals this state does not generate: V = 0, no policy
                on = act_rows[:, c0:c1]
                V = np.where(on, V, 0.0)
                pi = np.where(on[None], pi, np.nan)
                done = ach_rows[:, c0:c1] & on
            else:
                done = ach_rows[:, c0:c1]  # (n, G_h): goal already achieved here -> "stay", V = 0
            if done.any():
                stay = np.zeros(nA)
                stay[0] = 1.0
                pi = np.where(done[None], stay[:, None, None], pi)
                V = np.where(done, 0.0, V)
            self.a["V"][rows, c0:c1] = V
            if meta.policies or _holds_root(rows):
                self.a["P"][rows, c0:c1, :] = pi.transpose(1, 2, 0)

    def _believed_weights(self, idx: np.ndarray, h: int, others: list[int]) -> np.ndarray:
        """``U[s, a, o]``: the believed probability of the others' joint action o."""
        nA = self.meta.num_actions
        U = np.zeros((len(idx), nA, nA ** len(others)))
        for r, i in enumerate(idx.tolist()):
            state = self.states[i]
            for a in range(nA):
                for prob, profile in self.believed(state, h, a):
                    o = 0
                    for x in others:
                        o = o * nA + int(profile[x])
                    U[r, a, o] += prob
        return U


def boltzmann(Q: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """``softmax(beta * Q)`` over axis 0, the actions (stable), and ``V = sum_a pi Q``,
    sums in action order."""
    nA = Q.shape[0]
    Qmax = _reduce_axis(Q, 0, np.maximum)
    if math.isinf(beta):
        w = (Q == Qmax).astype(np.float64)  # uniform over exact argmax ties
    else:
        w = Q - Qmax
        w *= beta
        np.exp(w, out=w)
    total = w[0].copy()
    for a in range(1, nA):
        total += w[a]
    pi = w
    pi /= total
    V = pi[0] * Q[0]
    for a in range(1, nA):
        V += pi[a] * Q[a]
    return pi, V


def _reduce_axis(x: np.ndarray, axis: int, op) -> np.ndarray:
    """``op.reduce(x, axis)`` for an exact, order-free ``op`` (minimum / maximum) as a loop
    over the slices: twice as fast as numpy's reduction over an inner axis here."""
    take = [slice(None)] * x.ndim
    take[axis] = 0
    out = x[tuple(take)].copy()
    for i in range(1, x.shape[axis]):
        take[axis] = i
        op(out, x[tuple(take)], out=out)
    return out


def _holds_root(rows) -> bool:
    """Whether the batch ``rows`` (a slice or an index array) holds state 0, the root."""
    if isinstance(rows, slice):
        return rows.start == 0
    return bool(np.any(rows == 0))


def _rows(idx: np.ndarray):
    """``idx`` as a slice when it is an increasing contiguous range (the usual batch), else ``idx``."""
    if len(idx) and int(idx[-1]) - int(idx[0]) == len(idx) - 1 and bool(np.all(np.diff(idx) == 1)):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


# --- local workers ------------------------------------------------------------------------
_KERNEL: dict = {}


def _init_kernel_worker(spec: dict, inherited: dict, meta: KernelMeta, believed, states) -> None:
    from .shm import attach

    _KERNEL["k"] = LevelKernel({**inherited, **attach(spec)}, meta, believed, states)


def _kernel_task(idx: np.ndarray) -> int:
    _KERNEL["k"].compute(idx)
    return len(idx)


class _LocalRunner:
    """Runs a kernel over a batch of states in this process or across local workers.

    A batch goes to the workers when it holds ``MIN_PARALLEL_WORK`` state x joint-action
    x goal elements; the pool itself starts (lazily, at such a batch) only when the levels
    left hold ``POOL_START_BATCHES`` times that, enough to pay for starting it.
    """

    MIN_CHUNK = 16
    # Measured 2026-12-01 (tools/bench_empo.py --phase1-pool; docs/empo-distributed.md,
    # "Local Phase 1 pool"): batches of the 1e6-state world's biggest level (25 joint
    # actions x 4 goals = 100 elements per state), CPU milliseconds, because on the shared
    # machine a session's processes share one CPU allowance (Linux autogroup) and workers
    # cannot show a wall-time gain there:
    #   states  elements  serial   per worker (2 workers)   + dispatch ~3 ms -> on 2 free cores
    #    1,000     1e5      5.9      3.5                       break-even
    #    4,000     4e5     23.2     12.1                       1.5x
    #   16,000   1.6e6     90.3     47.6                       1.8x
    #   60,000     6e6    330      113                         2.8x (noisy; 2.1x in another run)
    # So a batch pays from ~4e5 elements. Starting the pool (fork the workers, share V and
    # P; the DAG is inherited) took ~0.25 s, which the pool wins back only over ~1e7
    # elements of work: 25 such batches. The 1e6-state world (1e8 elements) starts it at
    # its first big level, the 1e5-state world (8.5e6) never does.
    MIN_PARALLEL_WORK = 400_000
    POOL_START_BATCHES = 25

    def __init__(self, arrays: dict, meta: KernelMeta, workers: int, believed, states):
        self.workers = workers
        self.meta = meta
        self.believed = believed
        self.states = states
        self.shared = None
        self.pool = None
        self.arrays = arrays
        self.kernel = LevelKernel(arrays, meta, believed, states)
        self.parallel_batches = 0
        self.on_pool_start = None  # called once the workers read shared copies of the DAG
        self.written: list[np.ndarray] = []  # rows written before the pool starts
        # arrays the ranks of a node already share (.node_shared): forked workers write
        # them in place through the inherited mapping, no copy when the pool starts
        self.node_shared: set[str] = set()
        self.work_per_state = meta.num_actions**meta.num_agents * arrays["V"].shape[1]

    def _start_pool(self) -> None:
        """Share what the workers write (V, P: only the rows written so far are copied) and
        what they read: forked workers inherit the read-only arrays (the DAG, achieved)
        from the parent at no cost, other start methods map shared copies."""
        from parallel_core.pools import choose_start_method

        from .shm import SharedArrays
        from .workers import WorkerPool

        inherit = choose_start_method() == "fork"
        self.shared = SharedArrays()
        done = np.concatenate(self.written) if self.written else np.zeros(0, dtype=np.int64)
        for name, arr in self.arrays.items():
            if name in self.node_shared:
                continue
            if name in ("V", "P"):
                out = self.shared.create(name, arr.shape, arr.dtype)  # sparse until written
                out[done] = arr[done]
            elif not inherit:
                self.shared.share(name, arr)
        self.written = []
        inherited = {k: v for k, v in self.arrays.items() if k not in self.shared.arrays}
        self.arrays = {**inherited, **self.shared.arrays}
        self.kernel = LevelKernel(self.arrays, self.meta, self.believed, self.states)
        assert inherit or not self.node_shared, "node-shared arrays need forked workers"
        self.pool = WorkerPool(
            self.workers,
            _init_kernel_worker,
            (
                self.shared.spec(),
                inherited,
                self.meta,
                self.believed,
                self.states if self.believed else None,
            ),
        )
        if self.on_pool_start is not None and not inherited:
            self.on_pool_start()

    def mark_written(self, idx: np.ndarray) -> None:
        """Rows of V/P written outside :meth:`run` (terminal rows) before the pool starts."""
        if self.pool is None and self.workers > 1:
            self.written.append(np.asarray(idx, dtype=np.int64))

    def run(self, idx: np.ndarray, remaining_work: int | None = None, between=None) -> None:
        """Compute ``idx``; ``remaining_work``: elements left in this and later levels
        (decides whether starting the pool pays; None: it does); ``between``: see
        :meth:`LevelKernel.compute` (in this process only)."""
        big = (
            len(idx) * self.work_per_state >= self.MIN_PARALLEL_WORK
            and len(idx) >= 2 * self.MIN_CHUNK
        )
        worth_starting = (
            self.pool is not None
            or remaining_work is None
            or remaining_work >= self.POOL_START_BATCHES * self.MIN_PARALLEL_WORK
        )
        if self.workers <= 1 or not big or not worth_starting:
            self.kernel.compute(idx, between)
            self.mark_written(idx)
            return
        if self.pool is None:
            self._start_pool()
        self.parallel_batches += 1
        n_chunks = max(1, min(self.workers * 2, len(idx) // max(1, self.MIN_CHUNK)))
        futures = [self.pool.submit(_kernel_task, c) for c in np.array_split(idx, n_chunks)]
        for f in futures:
            f.result()

    def close(self, failed: bool = False) -> None:
        if self.pool is not None:
            self.pool.close(failed)
            self.pool = None
        if self.shared is not None:
            self.shared.close()


class _Release:
    """Gives back the pages of the transitions of finished levels (see ``release_dag``).

    Levels of a step-layered DAG are contiguous index ranges processed last first, so
    the finished states are always a tail ``[done_from, N)``: the tail of ``counts`` and
    of the per-outcome arrays is released, page by page, never read again.
    """

    def __init__(self, dag: Dag):
        self.dag = dag
        self.done_from = len(dag)
        self.released: dict[str, int] = {}

    def level_done(self, level: np.ndarray) -> None:
        if not len(level):
            return
        a, b = int(level[0]), int(level[-1]) + 1
        if b != self.done_from or b - a != len(level):
            return  # not the next contiguous range: keep everything (correct, just no saving)
        self.done_from = a
        d = self.dag
        self._tail("counts", a * d.num_joint_actions)
        first_outcome = int(d.state_offsets[a])
        for name in ("succ", "prob_idx", "probs_raw", "durations"):
            self._tail(name, first_outcome)

    def _tail(self, name: str, start: int) -> None:
        from .memory import release_pages

        arr = getattr(self.dag, name)
        if arr is None:
            return
        stop = self.released.get(name, len(arr))
        if start < stop:
            release_pages(arr, start, stop)
            self.released[name] = start

    def all_private(self) -> None:
        """The workers' shared copies replace the private arrays: release all of them."""
        self.done_from = 0
        self._tail("counts", 0)
        for name in ("succ", "prob_idx", "probs_raw", "durations"):
            self._tail(name, 0)


GATHER_ROWS = 32768  # policy rows per message: bounds the extra memory of the final gather


def _level_split(dag: Dag, level: np.ndarray, term: np.ndarray, size: int):
    """``(todo, splits)``: the level's non-terminal states and each rank's ``[lo, hi)`` of them.

    Normally the non-terminal states are split evenly. A partitioned DAG (each rank holds
    the transitions of its own share of every wave only) splits the level, which is a
    wave, as the DAG builder split the wave, then drops the terminal states."""
    from parallel_core.mpi import partition

    todo = level[~term]
    if dag.partition is None:
        return todo, partition(len(todo), size)
    live = np.zeros(len(level) + 1, dtype=np.int64)
    np.cumsum(~term, out=live[1:])
    return todo, [(int(live[a]), int(live[b])) for a, b in partition(len(level), size)]


def _check_partition(dag: Dag, levels: list[np.ndarray], ctx) -> None:
    """A partitioned DAG's levels must be its waves (step levels), on the ranks that built it."""
    from parallel_core.mpi import partition

    rank, size, owned = dag.partition
    if (rank, size) != (ctx.rank, ctx.size):
        raise ValueError(f"the DAG was partitioned for rank {rank} of {size}, not {ctx.rank} of {ctx.size}")
    waves = {start: (stop, share) for (start, stop), share in zip(dag.wave_bounds, owned)}
    starts = set()
    for level in levels:
        a, b = (int(level[0]), int(level[-1]) + 1) if len(level) else (-1, -1)
        stop, (lo, hi) = waves.get(a, (None, (0, 0)))
        if stop != b or b - a != len(level) or np.any(np.diff(level) != 1):
            raise ValueError(
                "a partitioned DAG needs step levels (its waves); build it with partitioned=False "
                "for other levels"
            )
        if hi - lo != b - a and (lo - a, hi - a) != partition(b - a, size)[rank]:
            raise ValueError("the DAG's share of a wave is not this rank's share of the level")
        starts.add(a)
    if len(starts) != len(waves):
        raise ValueError("a partitioned DAG needs step levels (its waves)")


def _rank_rows(todos: list[np.ndarray], splits: list, rank: int):
    """The row indices rank ``rank`` computed, level by level, in chunks of ``GATHER_ROWS``:
    ``(start, stop)`` when they are a contiguous range, else the index array."""
    for todo, split in zip(todos, splits):
        lo, hi = split[rank]
        for a in range(lo, hi, GATHER_ROWS):
            idx = todo[a : min(hi, a + GATHER_ROWS)]
            if int(idx[-1]) - int(idx[0]) == len(idx) - 1 and bool(np.all(np.diff(idx) == 1)):
                yield int(idx[0]), int(idx[-1]) + 1
            else:
                yield idx


class _GuardVerdict:
    """A memory guard's per-level verdict shared by a non-blocking ``MPI_MAX`` reduction."""

    def __init__(self, ctx, problem: str | None):
        from mpi4py import MPI

        self.ctx, self.problem = ctx, problem
        self.flag = np.array([1 if problem else 0], dtype=np.int32)
        self.any = np.zeros(1, dtype=np.int32)
        self.request = ctx.comm.Iallreduce(self.flag, self.any, op=MPI.MAX)

    def raise_if_any(self, requests: list) -> None:
        """Raise the first rank's problem on every rank (the texts travel only then), once
        the policy rows in flight (``requests``, posted in pairs by every rank) arrived."""
        from .exchange import wait_all
        from .memory import MemoryGuard

        wait_all([self.request])
        if self.any[0]:
            wait_all(requests)
            MemoryGuard.raise_first(self.ctx.allgather(self.problem))


def _post_policy_rows(
    ctx, P: np.ndarray, todo: np.ndarray, split, requests: list, direct: frozenset = frozenset()
) -> bool:
    """Post the non-blocking transfer of a finished level's policy rows to rank 0 (rank 0:
    the receives) when every rank's rows are one contiguous range; False otherwise (the
    rows then go with the final gather). ``direct``: see :func:`_gather_rows_to_root`."""
    ranges = []
    for lo, hi in split:
        rows = todo[lo:hi]
        if len(rows) and not bool(np.all(np.diff(rows) == 1)):
            return False
        ranges.append((int(rows[0]), int(rows[-1]) + 1) if len(rows) else None)
    comm, tag = ctx.comm, 73
    if ctx.is_root:
        for r, rng in enumerate(ranges):
            if r and rng is not None and r not in direct:
                requests.append(comm.Irecv(P[rng[0] : rng[1]], source=r, tag=tag))
    elif ranges[ctx.rank] is not None and ctx.rank not in direct:
        a, b = ranges[ctx.rank]
        requests.append(comm.Isend(P[a:b], dest=0, tag=tag))
    return True


class _ValueRows:
    """A finished level's value rows on their way between the ranks, without a meeting:
    each rank sends its own contiguous block of rows to every other rank and receives
    theirs straight into ``V`` (point to point: reading the own block meanwhile is
    allowed, MPI never touches it). The next level computes first the states that need
    none of the rows in flight (:meth:`split_ready`), calling :meth:`test` between
    batches so that the transfer progresses meanwhile, and waits only then: a rank that
    is ahead (or whose partner was descheduled) keeps computing instead of waiting."""

    TAG = 74

    def __init__(self, ctx, V: np.ndarray, ranges: list[tuple[int, int]], others: list):
        comm = ctx.comm
        self.own = ranges[ctx.rank]
        self.lo, self.hi = ranges[0][0], ranges[-1][1]
        a, b = self.own
        self.requests = others  # the policy rows posted with this level progress too
        self.mine: list = []
        for r, (c, d) in enumerate(ranges):
            if r == ctx.rank:
                continue
            if d > c:
                self.mine.append(comm.Irecv(V[c:d], source=r, tag=self.TAG))
            if b > a:
                self.mine.append(comm.Isend(V[a:b], dest=r, tag=self.TAG))

    def test(self) -> None:
        from mpi4py import MPI

        MPI.Request.Testall(self.mine)
        if self.requests:
            MPI.Request.Testall(self.requests)

    def wait(self) -> None:
        from .exchange import wait_all

        wait_all(self.mine)

    def split_ready(self, dag: Dag, idx: np.ndarray, block: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``(ready, rest)``: the states of ``idx`` (sorted) none of whose successors is a
        row in flight, decided per block of ``block`` consecutive states of ``idx`` (the
        kernel's batch: each block is ready when all of its successors are in this rank's
        own block, or all outside the level in flight), and the others. Two reductions
        over the blocks' outcomes instead of two per state: the states that are not ready
        sit together near the rank's borders (a state's successors lie near it), so whole
        blocks lose little, and each kernel batch stays one contiguous range."""
        if not len(idx) or self.hi - self.lo == self.own[1] - self.own[0]:
            return idx, idx[:0]
        offsets, succ = dag.state_offsets, dag.succ
        starts = offsets[idx[::block]].astype(np.int64)  # first outcome of each block
        base, stop = int(starts[0]), int(offsets[int(idx[-1]) + 1])
        if stop <= base:
            return idx, idx[:0]
        seg = succ[base:stop]
        starts -= base
        empty = np.diff(starts, append=len(seg)) == 0  # (no transitions: kept back)
        np.minimum(starts, len(seg) - 1, out=starts)
        lo_s, hi_s = np.minimum.reduceat(seg, starts), np.maximum.reduceat(seg, starts)
        a, b = self.own
        ok = ((lo_s >= a) & (hi_s < b)) | (hi_s < self.lo) | (lo_s >= self.hi)
        ok &= ~empty
        ok = np.repeat(ok, block)[: len(idx)]
        return idx[ok], idx[~ok]


def _root_rank(todo: np.ndarray, split) -> int | None:
    """The rank whose share ``split`` of ``todo`` holds state 0 (None: not in this level)."""
    hit = np.flatnonzero(todo == 0)
    if not hit.size:
        return None
    return next(r for r, (lo, hi) in enumerate(split) if lo <= int(hit[0]) < hi)


def _root_row(ctx, P: np.ndarray, root_rank: int | None) -> np.ndarray | None:
    """The root's policy row on rank 0 (sent by the rank that computed it); None elsewhere
    and for a terminal root."""
    if root_rank is None:
        return None
    if not ctx.is_distributed or root_rank == 0:
        return P[0].copy() if ctx.is_root else None
    if ctx.rank == root_rank:
        ctx.comm.Send(np.ascontiguousarray(P[0]), dest=0, tag=71)
        return None
    if ctx.is_root:
        row = np.empty(P.shape[1:], dtype=P.dtype)
        ctx.comm.Recv(row, source=root_rank, tag=71)
        return row
    return None


def _gather_rows_to_root(
    ctx, P: np.ndarray, todos: list[np.ndarray], splits: list, direct: frozenset = frozenset()
) -> None:
    """Send every rank's policy rows to rank 0 (raw buffers, no pickling). Every rank knows
    which rows each rank computed (the split of each level), so only rows travel; a
    contiguous range goes straight from and into ``P`` (no copy), and no side ever
    holds more than one chunk beyond ``P`` itself. ``direct``: the ranks that wrote their
    rows into rank 0's ``P`` itself (a node-shared array): nothing to send."""
    comm, tag = ctx.comm, 72
    if ctx.rank in direct and not ctx.is_root:
        return
    if ctx.is_root:
        for r in range(1, ctx.size):
            if r in direct:
                continue
            for rows in _rank_rows(todos, splits, r):
                if isinstance(rows, tuple):
                    comm.Recv(P[rows[0] : rows[1]], source=r, tag=tag)
                else:
                    buf = np.empty((len(rows),) + P.shape[1:], dtype=P.dtype)
                    comm.Recv(buf, source=r, tag=tag)
                    P[rows] = buf
    else:
        for rows in _rank_rows(todos, splits, ctx.rank):
            if isinstance(rows, tuple):
                comm.Send(P[rows[0] : rows[1]], dest=0, tag=tag)
            else:
                comm.Send(np.ascontiguousarray(P[rows]), dest=0, tag=tag)


def backward_induction(
    dag: Dag,
    goal_sets: Sequence[GoalSet],
    params: Phase1Params,
    levels: list[np.ndarray],
    achieved: np.ndarray,
    *,
    robots: Sequence[int] = (),
    workers: int = 1,
    ctx=None,
    believed_others_policy=None,
    progress: Callable[[int, int], None] | None = None,
    active: np.ndarray | None = None,
    memory_guard=None,
    policy_on: str = "root",
    release_dag: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Run Phase 1 over ``levels``; return ``(V, P, info)`` with every row filled on every rank.

    ``V``: ``(N, goals)``, ``P``: ``(N, goals, actions)`` (NaN for terminal states), goal
    columns grouped by human in ``goal_sets`` order. ``active`` (``(N, goals)`` bool, for
    generators whose goals depend on the state): goals a state does not generate get
    V = 0 and a NaN policy row, as in EMPO, where such values are simply absent.

    Under MPI every rank ends with the full ``V``; the policies are gathered where they
    are written: on rank 0 (``policy_on="root"``, the default: other ranks return
    ``P = None`` and hold only their own rows meanwhile) or on every rank (``"all"``).
    ``policy_on="none"`` (a run that writes no file, every mode, serial too): no policy
    row is stored or sent except the root's (``info["root_policy"]`` on rank 0, ``None``
    for a terminal root); ``P`` is ``None`` everywhere; ``V`` is the same.

    ``release_dag``: the transitions of a level are not read again once the level is
    done, so give their memory back as Phase 1 goes (step-layered DAGs, whose levels are
    contiguous index ranges, last first) and drop them at the end (``dag`` keeps its
    states and sizes): the policies and values grow while the DAG shrinks, and the peak
    is about the larger of the two instead of their sum. The CLI does this.
    """
    if policy_on not in ("root", "all", "none"):
        raise ValueError(f"policy_on must be 'root', 'all' or 'none', got {policy_on!r}")
    from parallel_core.mpi import get_context

    from .exchange import allgatherv_in_place, allgatherv_known, wait_all
    from .memory import MemoryLimitError
    from .node_shared import policy_array
    from .timing import CLOCK

    ctx = ctx if ctx is not None else get_context()
    if dag.partition is not None:
        _check_partition(dag, levels, ctx)
    N, nA = len(dag), dag.num_actions
    G = sum(len(gs) for gs in goal_sets)
    dtype = np.dtype(params.dtype)
    columns, c = [], 0
    for gs in goal_sets:
        columns.append((c, c + len(gs)))
        c += len(gs)
    meta = KernelMeta(
        dag.num_agents,
        nA,
        tuple(gs.human for gs in goal_sets),
        tuple(robots),
        tuple(columns),
        params,
        policy_on != "none",
    )
    # Ranks on one node share P instead of sending rows (.node_shared): node is that
    # array (None: the message path), direct the ranks whose rows need no message.
    node, direct = policy_array(ctx, (N, G, nA), dtype, policy_on, workers)
    if memory_guard is not None:
        p_bytes = N * G * nA * dtype.itemsize if meta.policies else 0
        if node is not None:  # P once per node: each of its ranks makes its share resident
            p_bytes //= ctx.local_size
        extra = N * G * dtype.itemsize + p_bytes  # V and P, once written
        if release_dag and dag.step_layered:
            extra = max(0, extra - dag.nbytes())  # the DAG shrinks while they grow
        try:
            memory_guard.check("before Phase 1", extra=extra)
        except MemoryLimitError:
            if node is not None:  # raised on every rank at once (the guard decides for all)
                node.close()
            raise
    keep_policy = meta.policies and (ctx.is_root or policy_on == "all" or not ctx.is_distributed)
    # terminal rows of a node-shared P: written once, by rank 0 (every rank sees them)
    nan_rows = keep_policy and (node is None or ctx.is_root)
    root_rank = None  # policy_on="none": the rank that computes the root's row
    arrays = {
        **dag.kernel_arrays(),
        "achieved": achieved,
        # Untouched pages take no memory: V and P become resident as levels write them
        # (terminal rows of P are set to NaN level by level, where the policies are kept).
        "V": np.zeros((N, G), dtype=dtype),
        "P": np.empty((N, G, nA), dtype=dtype) if node is None else node.array,
    }
    if active is not None:
        arrays["active"] = active
    if dag.durations is not None and params.rho_h != 0.0:
        arrays["delta"] = np.exp(-params.rho_h * dag.durations)
    t0 = time.perf_counter()
    t_exchange = 0.0
    runner = _LocalRunner(arrays, meta, workers, believed_others_policy, dag.states)
    if node is not None:
        runner.node_shared.add("P")
    release = _Release(dag) if (release_dag and dag.step_layered) else None
    if release is not None:
        runner.on_pool_start = release.all_private  # the kernel reads the shared copies now
    failed = True
    splits: list = []  # each level's split of its non-terminal states between the ranks
    # policy_on="root" without local workers (whose pool would move P into shared memory):
    # each level's policy rows go to rank 0 as soon as the level is done (non-blocking,
    # straight from and into P), so the transfer overlaps with the later levels instead
    # of ending Phase 1 with a gather. early[li]: level li's rows travel that way.
    early = [] if (ctx.is_distributed and policy_on == "root" and workers <= 1) else None
    requests: list = []
    try:
        # This rank's work (elements) in each level and all later ones: is a pool worth starting?
        live = np.array([len(lv) - int(dag.terminal[lv].sum()) for lv in levels], dtype=np.int64)
        left = np.cumsum(live[::-1])[::-1] // ctx.size * runner.work_per_state
        # Without local workers (whose pool would move V into shared memory) a level's
        # value rows travel while the next level computes the states that do not need
        # them (_ValueRows); the memory guard's verdict is read with those rows.
        overlap = ctx.is_distributed and workers <= 1
        pending, pending_verdict = None, None

        def settle() -> None:
            """Wait for the value rows in flight and read the verdict that came with them."""
            nonlocal pending, pending_verdict, t_exchange
            te = time.perf_counter()
            if pending is not None:
                with CLOCK.part("p1_exchange"):
                    pending.wait()
                pending = None
            t_exchange += time.perf_counter() - te
            if pending_verdict is not None:
                with CLOCK.part("p1_guard"):
                    pending_verdict.raise_if_any(requests)
                pending_verdict = None

        for li, level in enumerate(levels):
            term = dag.terminal[level]
            todo, split = _level_split(dag, level, term, ctx.size)
            splits.append(split)
            lo, hi = split[ctx.rank]
            my_idx = todo[lo:hi]
            if not meta.policies and root_rank is None:
                root_rank = _root_rank(todo, split)
            if pending is not None:
                with CLOCK.part("p1_split"):
                    ready, my_rest = pending.split_ready(dag, my_idx, runner.kernel.batch)
                with CLOCK.part("p1_kernel"):
                    runner.run(ready, int(left[li]), between=pending.test)
                settle()
            else:
                my_rest = my_idx
            with CLOCK.part("p1_kernel"):
                runner.run(my_rest, int(left[li]))
            V, P = runner.arrays["V"], runner.arrays["P"]  # shared copies once workers start
            if nan_rows and term.any():
                P[level[term]] = np.nan
                runner.mark_written(level[term])
            if release is not None:
                with CLOCK.part("p1_release"):
                    release.level_done(level)
            where = f"after Phase 1 level {li + 1} of {len(levels)}"
            verdict = None
            if ctx.is_distributed and memory_guard is not None and memory_guard.active:
                # The ranks' verdicts travel beside the value rows (a non-blocking reduction
                # read when the rows have arrived): no extra meeting per level.
                verdict = _GuardVerdict(ctx, memory_guard.local_problem(where))
            if ctx.is_distributed:  # every rank knows the split of todo
                te = time.perf_counter()
                shares = [b - a for a, b in split]
                contiguous = len(todo) and bool(np.all(np.diff(todo) == 1))
                if early is not None:
                    early.append(_post_policy_rows(ctx, P, todo, split, requests, direct))
                with CLOCK.part("p1_exchange"):
                    if contiguous and overlap:
                        first = int(todo[0])
                        ranges = [(first + a, first + b) for a, b in split]
                        pending, pending_verdict = _ValueRows(ctx, V, ranges, requests), verdict
                        verdict = None
                    elif contiguous:
                        # a contiguous range (sorted, no terminal state inside): one
                        # Allgatherv straight into V
                        allgatherv_in_place(ctx, V[int(todo[0]) : int(todo[-1]) + 1], shares)
                    else:
                        V[todo] = allgatherv_known(ctx, V[my_idx], shares)
                runner.mark_written(todo)
                t_exchange += time.perf_counter() - te
            if verdict is not None:
                with CLOCK.part("p1_guard"):
                    verdict.raise_if_any(requests)
            elif memory_guard is not None and not ctx.is_distributed:
                with CLOCK.part("p1_guard"):
                    memory_guard.check(where)
            if progress is not None:
                progress(li + 1, len(levels))
        settle()
        V, P = runner.arrays["V"], runner.arrays["P"]
        root_policy = None
        if not meta.policies:  # only the root's row, from the rank that computed it
            root_policy = _root_row(ctx, P, root_rank)
        elif ctx.is_distributed:  # policies are not needed by later levels: one exchange at the end
            te = time.perf_counter()
            todos = [level[~dag.terminal[level]] for level in levels]
            if early is not None:  # levels whose rows already travel (or have arrived)
                with CLOCK.part("p1_gather_policies"):
                    wait_all(requests)
                todos = [t for t, e in zip(todos, early) if not e]
                splits = [t for t, e in zip(splits, early) if not e]
            if node is not None:  # every row this node's ranks wrote is visible to all of them
                with CLOCK.part("p1_gather_policies"):
                    node.sync()
            if policy_on == "all" and node is None:  # (one node: every row is in the one P)
                for todo, split in zip(todos, splits):
                    lo, hi = split[ctx.rank]
                    shares = [b - a for a, b in split]
                    P[todo] = allgatherv_known(ctx, P[todo[lo:hi]], shares)
            elif policy_on == "root":
                with CLOCK.part("p1_gather_policies"):
                    _gather_rows_to_root(ctx, P, todos, splits, direct)
            del todos
            t_exchange += time.perf_counter() - te
        # Plain arrays; when workers shared them, views of the mappings, which stay valid
        # after the files are removed (no second copy of V and P).
        V_out = np.asarray(V)
        if (ctx.is_distributed and policy_on == "root" and not ctx.is_root) or not meta.policies:
            P_out = None
        else:
            P_out = np.asarray(P)
        if node is not None:
            node.close()
        failed = False
    except MemoryLimitError:
        if node is not None:  # raised on every rank at once (the guard decides for all)
            node.close()
        raise
    finally:
        runner.close(failed)
    if release is not None:
        dag.drop_transitions()
    total = time.perf_counter() - t0
    return (
        V_out,
        P_out,
        {
            "phase1_s": total,
            "exchange_s": t_exchange,
            "parallel_batches": runner.parallel_batches,
            "root_policy": root_policy,
        },
    )

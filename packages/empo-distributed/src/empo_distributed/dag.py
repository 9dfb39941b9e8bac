"""The DAG of reachable states, built by breadth-first waves, stored as CSR arrays.

One algorithm, three ways to run a wave (chosen by arguments, not by branches inside
the expansion):

* serial: this process expands the whole wave;
* local processes: the wave is cut into chunks, each worker expands a chunk and returns
  compact successor data (unique successor tuples of the chunk + integer references
  into them); the parent deduplicates against the global index;
* MPI: every rank expands its contiguous share of the wave (with its own local
  workers), the ranks ``allgather`` their compact results (new full state tuples are
  unavoidable here: indices do not exist yet), and every rank merges them in rank
  order with the same deterministic rule, so all ranks end with identical ``states``,
  ``state_to_idx`` and transition arrays. Ownership is "contiguous slice of the wave",
  never a (salted) hash.

Temporary ids follow discovery order, which depends on the number of ranks and
workers; the final order does not: states are sorted topologically by Kahn's algorithm
taking the smallest state tuple first (for step-layered worlds this is
``sorted(states)``), so every mode produces the same arrays.

Transitions end up in flat arrays: for state ``i`` and joint action ``k`` (agent 0 the
least significant digit) the outcomes are ``probs[o]``, ``succ[o]`` for
``o in range(sk_offsets[i*K + k], sk_offsets[i*K + k + 1])``.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .exchange import allgatherv_known, pack, unpack
from .world_model import WorldError, joint_actions, num_actions, root_state

PROB_TOL = 1e-9  # how far the outcome probabilities of a joint action may sum away from 1


def _small_uint(maximum: int):
    for dt in (np.uint8, np.uint16, np.uint32):
        if maximum <= np.iinfo(dt).max:
            return dt
    return np.int64


def _index_dtype(n: int):
    return np.int32 if n < 2**31 else np.int64


def _offset_dtype(n_outcomes: int):
    """Offsets into the outcome arrays: 4 bytes while they fit (4 bytes per state saved)."""
    return np.uint32 if n_outcomes < 2**32 else np.int64


class ProbTable:
    """Distinct probability values (float64, exact) and a small integer index per outcome.

    Worlds have few distinct probabilities (1, 1/2, 1/3, ...): 1 byte per outcome instead
    of 8, and the kernel reads ``values[index]``, the very same float64 numbers. Values
    get ids in the order they are added; new values of one call are added sorted, so
    the table does not depend on how a wave was split (ranks merge their new values).
    """

    def __init__(self):
        self.lookup: dict[float, int] = {}
        self._sorted = np.zeros(0)  # known values, sorted, and their ids
        self._ids = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lookup)

    def _positions(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.searchsorted(self._sorted, probs)
        np.minimum(pos, max(0, len(self._sorted) - 1), out=pos)
        known = self._sorted[pos] == probs if len(self._sorted) else np.zeros(len(probs), dtype=bool)
        return pos, known

    def new_values(self, probs: np.ndarray) -> list[float]:
        """The distinct values of ``probs`` not in the table yet, sorted."""
        if len(probs):  # the first value once and the others: most outcomes repeat it
            probs = np.concatenate([probs[:1], probs[probs != probs[0]]])
        _, known = self._positions(probs)
        return sorted_unique(probs[~known]).tolist()

    def add(self, values) -> None:
        """Give each unknown value of ``values`` the next id, in sorted order."""
        fresh = [x for x in sorted(set(values)) if x not in self.lookup]
        if not fresh:
            return
        for x in fresh:
            self.lookup[x] = len(self.lookup)
        vals = np.fromiter(self.lookup.keys(), dtype=np.float64, count=len(self.lookup))
        order = np.argsort(vals, kind="stable")
        self._sorted = vals[order]
        self._ids = np.fromiter(self.lookup.values(), dtype=np.int64, count=len(self.lookup))[order]

    def index(self, probs: np.ndarray) -> np.ndarray:
        """Ids of ``probs`` (every value must be in the table), in the smallest unsigned type.
        Most outcomes of a world share one probability (built-in worlds: 1.0 for ~99.8%):
        the entries equal to the first are filled with its id, only the others searched
        (one compare per entry instead of a binary search: ~8x less CPU per wave chunk)."""
        dtype = _small_uint(max(0, len(self) - 1))
        if not len(probs):
            return np.zeros(0, dtype=dtype)
        first_id = self._ids[self._positions(probs[:1])[0][0]]
        ids = np.full(len(probs), first_id, dtype=dtype)
        other = np.flatnonzero(probs != probs[0])
        if len(other):
            ids[other] = self._ids[self._positions(probs[other])[0]]
        return ids

    def encode(self, probs: np.ndarray) -> np.ndarray | None:
        """Add the new values of ``probs``; their indices (None beyond 65535 distinct values)."""
        self.add(self.new_values(probs))
        if len(self.lookup) > 65535:
            return None
        return self.index(probs).astype(np.uint16)

    def values(self) -> np.ndarray:
        out = np.empty(len(self.lookup))
        for x, i in self.lookup.items():
            out[i] = x
        return out


# Integer keys whose range is at most DENSE_SPAN times their number are deduplicated and
# looked up through a table over the range (one scatter / one gather) instead of sorting
# and binary search: the successor keys of a built-in world's wave are that dense.
DENSE_SPAN = 4


def _dense_span(x: np.ndarray) -> tuple[int, int] | None:
    """``(lo, span)`` of integer ``x`` when its range is dense enough for a table."""
    if len(x) < 2 or x.dtype.kind not in "iu":
        return None
    lo, hi = int(x.min()), int(x.max())
    span = hi - lo + 1
    return (lo, span) if span <= DENSE_SPAN * len(x) else None


def sorted_unique(x: np.ndarray, kind: str | None = None) -> np.ndarray:
    """``np.unique(x)`` for 1-D arrays by sorting (much faster than numpy's hash-based unique
    for millions of int64 keys); ``kind="stable"`` merges pre-sorted runs in linear time.
    Dense integer keys (see ``DENSE_SPAN``) are marked in a table over their range instead."""
    dense = _dense_span(x)
    if dense is not None:
        lo, span = dense
        seen = np.zeros(span, dtype=np.bool_)
        seen[x - lo] = True
        out = np.flatnonzero(seen)
        out += lo
        return out.astype(x.dtype, copy=False)
    s = np.sort(x, kind=kind)
    if len(s) < 2:
        return s
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def compact_probs(probs: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(table, index)`` for ``probs`` (``(None, None)`` when too many distinct values)."""
    table = ProbTable()
    idx = table.encode(probs)
    if idx is None:
        return None, None
    values = table.values()
    return values, idx.astype(_small_uint(len(values) - 1))


@dataclass
class Dag:
    """Reachable states in topological order (``states[0]`` is the root) and compact CSR transitions.

    For state ``i`` and joint action ``k`` (agent 0 the least significant digit) there are
    ``counts[i*K + k]`` outcomes, stored from ``state_offsets[i] + sum(counts[i*K : i*K + k])``
    on: successor index ``succ[o]``, probability ``prob_table[prob_idx[o]]`` (or
    ``probs_raw[o]`` for worlds with too many distinct probabilities), optional duration.
    ``sk_offsets`` and ``probs`` give the plain CSR view (computed on demand).
    """

    states: Sequence
    state_to_idx: Mapping
    num_agents: int
    num_actions: int
    terminal: np.ndarray  # bool (N,)
    counts: np.ndarray  # small unsigned ints (N*K,)
    state_offsets: np.ndarray  # uint32 (int64 beyond 2**32 outcomes) (N + 1,)
    succ: np.ndarray  # int32/int64 (M,)
    prob_table: np.ndarray | None = None  # float64 distinct values
    prob_idx: np.ndarray | None = None  # uint8/uint16 (M,)
    probs_raw: np.ndarray | None = None  # float64 (M,) when there is no table
    durations: np.ndarray | None = None  # float64 (M,), None when every duration is 1
    step_layered: bool = False
    waves: int = 0
    timings: dict = field(default_factory=dict)
    _state_array: np.ndarray | None = field(default=None, repr=False)
    _num_outcomes: int | None = field(default=None, repr=False)
    wave_bounds: list | None = None  # [(start, stop)] of each BFS wave (batched builder)
    # (rank, size, [(lo, hi)] per wave): the transitions are those of this rank's states only
    partition: tuple | None = None

    @staticmethod
    def from_csr(states, state_to_idx, num_agents, num_actions, terminal, sk_offsets, probs, succ, **kw):
        """Build a compact :class:`Dag` from plain CSR arrays (``sk_offsets``: ``N*K + 1``)."""
        N = len(states)
        K = num_actions**num_agents
        counts = np.diff(sk_offsets)
        counts = counts.astype(_small_uint(int(counts.max()) if len(counts) else 0))
        table, idx = compact_probs(probs)
        return Dag(
            states, state_to_idx, num_agents, num_actions, terminal,
            counts=counts,
            state_offsets=sk_offsets[::K][: N + 1].astype(_offset_dtype(int(sk_offsets[-1]))),
            succ=succ.astype(_index_dtype(N)),
            prob_table=table,
            prob_idx=idx,
            probs_raw=None if idx is not None else np.asarray(probs, dtype=np.float64),
            **kw,
        )

    @property
    def num_joint_actions(self) -> int:
        """``K = num_actions ** num_agents``, the joint actions per state."""
        return self.num_actions**self.num_agents

    @property
    def sk_offsets(self) -> np.ndarray:
        """Plain CSR offsets ``(N*K + 1,)`` int64 (computed on demand: 8 bytes per pair)."""
        out = np.zeros(len(self.counts) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=out[1:])
        return out

    @property
    def probs(self) -> np.ndarray:
        """Probability of every outcome (float64; computed from the table on demand)."""
        if self.prob_idx is not None:
            return self.prob_table[self.prob_idx]
        return self.probs_raw

    @property
    def num_outcomes(self) -> int:
        return self._num_outcomes if self._num_outcomes is not None else len(self.succ)

    def drop_transitions(self) -> None:
        """Forget the transition arrays (a Phase 1 with ``release_dag`` consumed them);
        states, terminal flags and sizes stay."""
        self._num_outcomes = self.num_outcomes
        self.partition = None
        self.counts = self.state_offsets = self.succ = None
        self.prob_idx = self.probs_raw = self.durations = None

    def round_probs_float16(self) -> None:
        """EMPO's ``use_float16``: probabilities rounded to float16 (stored compactly anyway)."""
        if self.prob_idx is not None:
            self.prob_table = self.prob_table.astype(np.float16).astype(np.float64)
        else:
            self.probs_raw = self.probs_raw.astype(np.float16)

    def kernel_arrays(self) -> dict:
        """The arrays :class:`.phase1.LevelKernel` reads."""
        out = {
            "counts": self.counts,
            "state_offsets": self.state_offsets,
            "succ": self.succ,
        }
        if self.prob_idx is not None:
            out["prob_table"], out["prob_idx"] = self.prob_table, self.prob_idx
        else:
            out["probs"] = self.probs_raw
        return out

    def nbytes(self) -> int:
        """Bytes held by the transition arrays."""
        arrays = (self.counts, self.state_offsets, self.succ, self.prob_idx, self.probs_raw, self.durations)
        return int(sum(a.nbytes for a in arrays if a is not None))

    def __len__(self) -> int:
        return len(self.states)

    def state_array(self) -> np.ndarray | None:
        """States as an int64 ``(N, L)`` array when they are equal-length integer tuples, else None."""
        if hasattr(self.states, "array"):  # a StateTable: decoded on demand, not kept
            return self.states.array()
        if self._state_array is None and self.states:
            first = self.states[0]
            if isinstance(first, tuple) and all(isinstance(x, (int, np.integer)) for x in first):
                try:
                    arr = np.array(self.states, dtype=np.int64)
                except (ValueError, TypeError, OverflowError):
                    return None
                if arr.ndim == 2:
                    self._state_array = arr
        return self._state_array

    def outcomes(self, i: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and successor indices of joint action ``k`` in state ``i``."""
        K = self.num_joint_actions
        a = int(self.state_offsets[i]) + int(self.counts[i * K : i * K + k].sum())
        b = a + int(self.counts[i * K + k])
        probs = self.prob_table[self.prob_idx[a:b]] if self.prob_idx is not None else self.probs_raw[a:b]
        return probs, self.succ[a:b]

    def steps(self) -> np.ndarray:
        """The step count (first element) of every state."""
        if hasattr(self.states, "steps"):
            return self.states.steps()
        return np.fromiter((s[0] for s in self.states), dtype=np.int64, count=len(self.states))

    def successors(self, i: int) -> list[int]:
        """Sorted distinct successor indices of state ``i``."""
        a, b = self.state_offsets[i], self.state_offsets[i + 1]
        return sorted(set(self.succ[a:b].tolist()))


@dataclass
class Expansion:
    """Compact successor data of a list of states (one chunk, one rank, or one wave)."""

    terminal: np.ndarray  # uint8 (n,)
    counts: np.ndarray  # int32 (n*K,): outcomes per (state, joint action)
    probs: np.ndarray  # float64
    ref: np.ndarray  # int64: index into succ_states
    durations: np.ndarray | None  # float64, or None when all are 1
    succ_states: list  # unique successor tuples, first-seen order
    error: str | None = None


def expand_states(
    world_model, states: list, joint: list[list[int]], want_durations: bool = False
) -> Expansion:
    """Call ``transition_probabilities`` for every state and joint action; check the results.

    With ``want_durations`` (only when discounting needs them, as in EMPO) and a world
    that has EMPO's ``transition_durations(state, actions, transitions)``, the durations
    come from that method; otherwise from an optional third element of each outcome.
    Errors (bad probabilities, exceptions of the world model) come back in ``error``
    instead of being raised, so MPI ranks can agree on failing together.
    """
    K = len(joint)
    terminal = np.zeros(len(states), dtype=np.uint8)
    counts = np.zeros(len(states) * K, dtype=np.int32)
    probs: list[float] = []
    ref: list[int] = []
    durs: list[float] = []
    any_duration = False
    local: dict = {}
    succ_states: list = []
    tp = world_model.transition_probabilities
    td = getattr(world_model, "transition_durations", None) if want_durations else None
    try:
        for i, state in enumerate(states):
            for k, actions in enumerate(joint):
                outs = tp(state, actions)
                if outs is None:
                    if k:
                        return _failed(
                            f"state {state!r}: transition_probabilities returned None for joint "
                            f"action {actions} but not for the first one; terminal states must "
                            "return None for every joint action"
                        )
                    terminal[i] = 1
                    break
                total = 0.0
                given = None
                if td is not None:
                    given = list(td(state, list(actions), [(float(o[0]), o[1]) for o in outs]))
                    if len(given) != len(outs):
                        return _failed(
                            f"state {state!r}, actions {actions}: transition_durations returned "
                            f"{len(given)} durations for {len(outs)} outcomes"
                        )
                for n_out, out in enumerate(outs):
                    p, s2 = out[0], out[1]
                    if given is not None or len(out) > 2:
                        d = float(given[n_out] if given is not None else out[2])
                        if not d > 0:
                            return _failed(
                                f"state {state!r}, actions {actions}: duration {d} must be > 0"
                            )
                        any_duration = any_duration or d != 1.0
                    else:
                        d = 1.0
                    if not 0.0 <= p <= 1.0:
                        return _failed(
                            f"state {state!r}, actions {actions}: probability {p} is outside [0, 1]"
                        )
                    j = local.get(s2)
                    if j is None:
                        j = local[s2] = len(succ_states)
                        succ_states.append(s2)
                    probs.append(float(p))
                    ref.append(j)
                    durs.append(d)
                    total += p
                if not outs or abs(total - 1.0) > PROB_TOL:
                    return _failed(
                        f"state {state!r}, actions {actions}: transition probabilities sum to "
                        f"{total!r}, not 1; fix the world model's transition_probabilities"
                    )
                counts[i * K + k] = len(outs)
    except Exception as exc:  # the world model's own bug: report it with the state
        return _failed(f"transition_probabilities failed: {type(exc).__name__}: {exc}")
    return Expansion(
        terminal,
        counts,
        np.asarray(probs, dtype=np.float64),
        np.asarray(ref, dtype=np.int64),
        np.asarray(durs, dtype=np.float64) if any_duration else None,
        succ_states,
    )


def _failed(message: str) -> Expansion:
    empty = np.zeros(0)
    return Expansion(empty, empty, empty, empty, None, [], message)


# --- local worker processes -------------------------------------------------------------
_WORKER: dict = {}


def _init_expand_worker(world_model, joint, want_durations) -> None:
    _WORKER["wm"] = world_model
    _WORKER["joint"] = joint
    _WORKER["durations"] = want_durations


def _expand_chunk(states: list) -> Expansion:
    return expand_states(_WORKER["wm"], states, _WORKER["joint"], _WORKER["durations"])


class WaveExpander:
    """Expands a list of states in this process or across a pool of local workers."""

    MIN_CHUNK = 64  # below this a chunk costs more in pickling than it saves

    def __init__(self, world_model, joint, workers: int = 1, want_durations: bool = False):
        self.world_model = world_model
        self.joint = joint
        self.want_durations = want_durations
        self.workers = max(1, int(workers))
        self.pool = None

    def __enter__(self):
        if self.workers > 1:
            from .workers import WorkerPool

            self.pool = WorkerPool(
                self.workers,
                _init_expand_worker,
                (self.world_model, self.joint, self.want_durations),
            )
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.pool is not None:
            self.pool.close(failed=exc_type is not None)
            self.pool = None
        return False

    def expand(self, states: list) -> list[Expansion]:
        """Expansions of consecutive chunks of ``states`` (one chunk when run in-process)."""
        n = len(states)
        if self.pool is None or n < 2 * self.MIN_CHUNK:
            return [expand_states(self.world_model, states, self.joint, self.want_durations)]
        n_chunks = min(self.workers * 4, max(1, n // self.MIN_CHUNK))
        bounds = np.linspace(0, n, n_chunks + 1).astype(int)
        futures = [
            self.pool.submit(_expand_chunk, states[a:b])
            for a, b in zip(bounds[:-1], bounds[1:])
            if b > a
        ]
        # The parent deduplicates the chunks' successors against the global index directly.
        return [f.result() for f in futures]


# --- the wave loop ------------------------------------------------------------------------
def build_dag(
    world_model,
    *,
    workers: int = 1,
    ctx=None,
    progress: Callable[[int, int], None] | None = None,
    max_states: int | None = None,
    durations: bool = False,
    memory_guard=None,
    partitioned: bool = False,
) -> Dag:
    """Explore every state reachable from ``reset()`` and return the :class:`Dag`.

    ``durations``: ask the world for transition durations (needed only when discounting).
    ``partitioned`` (MPI, worlds with batch expansion): each rank keeps only the
    transitions of the states it expanded (see :func:`build_dag_batched`); ignored otherwise.
    ``memory_guard`` (:class:`.memory.MemoryGuard`) is checked after every wave.
    ``workers`` local processes expand each wave (per rank); ``ctx`` is a
    ``parallel_core.mpi`` context (default: ``get_context()``). ``progress(wave,
    n_states)`` is called after each wave. Raises :class:`WorldError` (identically on every
    rank) on bad probabilities, a cycle, or more than ``max_states`` states.
    """
    from parallel_core.mpi import get_context

    ctx = ctx if ctx is not None else get_context()
    if getattr(world_model, "batch_expansion", False):
        return build_dag_batched(
            world_model,
            ctx=ctx,
            progress=progress,
            max_states=max_states,
            memory_guard=memory_guard,
            workers=workers,
            partitioned=partitioned,
        )
    t0 = time.perf_counter()
    n_agents = len(world_model.agents)
    nA = num_actions(world_model)
    joint = joint_actions(n_agents, nA)
    K = len(joint)
    root = root_state(world_model)
    try:
        hash(root)
    except TypeError:
        raise WorldError(f"states must be hashable tuples, got {type(root).__name__}") from None

    states = [root]
    state_to_idx = {root: 0}
    parts: list[tuple] = []
    start, stop, wave = 0, 1, 0
    with WaveExpander(world_model, joint, workers, durations) as expander:
        while start < stop:
            lo, hi = ctx.work_range(stop - start)
            mine = expander.expand(states[start + lo : start + hi])
            # Ranks in rank order, chunks in wave order: the merge below is identical everywhere.
            gathered = (
                [g for part in ctx.allgather(mine) for g in part] if ctx.is_distributed else mine
            )
            errors = [g.error for g in gathered if g.error]
            if errors:
                raise WorldError(errors[0])
            for g in gathered:
                remap = np.empty(len(g.succ_states), dtype=np.int64)
                for j, s2 in enumerate(g.succ_states):
                    idx = state_to_idx.get(s2)
                    if idx is None:
                        idx = state_to_idx[s2] = len(states)
                        states.append(s2)
                    remap[j] = idx
                parts.append((g.terminal, g.counts, g.probs, remap[g.ref], g.durations))
            wave += 1
            if max_states is not None and len(states) > max_states:
                raise WorldError(
                    f"more than {max_states} reachable states after {wave} waves; "
                    "lower --max-steps or raise --max-states"
                )
            if memory_guard is not None:
                memory_guard.check(f"after DAG wave {wave} ({len(states)} states)")
            if progress is not None:
                progress(wave, len(states))
            start, stop = stop, len(states)
    t_bfs = time.perf_counter() - t0

    terminal = np.concatenate([p[0] for p in parts]).astype(bool)
    counts = np.concatenate([p[1] for p in parts]).astype(np.int64)
    probs = np.concatenate([p[2] for p in parts])
    succ = np.concatenate([p[3] for p in parts])
    with_d = any(p[4] is not None for p in parts)
    durations = (
        np.concatenate([p[4] if p[4] is not None else np.ones(len(p[2])) for p in parts])
        if with_d
        else None
    )
    N = len(states)
    per_state = counts.reshape(N, K).sum(axis=1)
    src = np.repeat(np.arange(N, dtype=np.int64), per_state)

    # Canonical order (identical in every mode).
    step_layered = _is_step_layered(states, src, succ)
    perm = _topological_order(states, src, succ, step_layered)
    inv = np.empty(N, dtype=np.int64)
    inv[perm] = np.arange(N, dtype=np.int64)

    old_start = np.concatenate(([0], np.cumsum(per_state)[:-1]))
    lens = per_state[perm]
    new_start = np.concatenate(([0], np.cumsum(lens)[:-1]))
    take = np.repeat(old_start[perm] - new_start, lens) + np.arange(int(lens.sum()), dtype=np.int64)
    counts_new = counts.reshape(N, K)[perm].reshape(-1)
    sk_offsets = np.zeros(N * K + 1, dtype=np.int64)
    np.cumsum(counts_new, out=sk_offsets[1:])
    states_sorted = [states[i] for i in perm]
    # The discovery-order list and index go before the final index is built: states that
    # are Python objects are held once (plus one index), never twice.
    states.clear()
    state_to_idx.clear()
    dag = Dag.from_csr(
        states_sorted,
        {s: i for i, s in enumerate(states_sorted)},
        n_agents,
        nA,
        terminal[perm],
        sk_offsets,
        probs[take],
        inv[succ[take]],
        durations=durations[take] if durations is not None else None,
        step_layered=step_layered,
        waves=wave,
    )
    dag.timings = {"bfs_s": t_bfs, "order_s": time.perf_counter() - t0 - t_bfs}
    return dag


BATCH_STATES = 4096  # states per expand_batch call: ~10 MB of temporaries, as fast as 16k
POOL_MIN_WAVE = 32768  # local workers expand a wave only from this size on
REPLICATE_WAVE = 2048  # MPI: smaller waves are expanded whole by every rank (no exchange)


def _init_batch_worker(world_model) -> None:
    _WORKER["wm"] = world_model


def _expand_batch_chunk(rows: np.ndarray):
    return _WORKER["wm"].expand_batch(rows)


def build_dag_batched(
    world_model,
    *,
    ctx,
    progress=None,
    max_states=None,
    memory_guard=None,
    workers: int = 1,
    partitioned: bool = False,
) -> Dag:
    """The DAG of a step-layered world with ``codec()``/``expand_batch()`` (built-in worlds).

    Waves are steps: the successors of wave t are exactly wave t+1, found by sorting int64
    keys (no Python object per state). Under MPI each rank expands its contiguous share of
    the wave, deduplicates its own successor keys and turns its own outcomes into compact
    form (1-byte probability ids, int32 successor indices) once the ranks have merged
    their sorted key sets; only the compact arrays travel (``Allgatherv``), so no rank
    repeats another's work. States are stored as sorted keys (a
    :class:`.states.StateTable`), which is the canonical order ``sorted(states)`` of the
    general builder, so both builders give the same arrays. The DAG arrays grow in place
    wave by wave (no final join, no second copy). With ``workers > 1`` local processes
    expand chunks of a rank's share of big waves (results in chunk order).

    ``partitioned`` (under MPI): the transitions are not exchanged at all; a rank keeps
    those of the states it expanded (its ``partition`` share of each wave from
    ``REPLICATE_WAVE`` states on, every state of smaller waves) and the other states'
    rows are empty (count 0). The states, terminal flags and probability table are
    complete on every rank. Phase 1 over step levels, split the same way, reads only
    a rank's own rows (``Dag.partition``), so the ~150 bytes per state of compact
    transitions are neither sent nor copied nor held by every rank.
    """
    from .memory import release_free_memory
    from .timing import CLOCK

    t0 = time.perf_counter()
    codec = world_model.codec()
    n_agents, nA = len(world_model.agents), num_actions(world_model)
    K = nA**n_agents
    root = np.asarray([root_state(world_model)], dtype=np.int64)
    keys = codec.encode(root)
    out = _GrowingDag(keys)
    n_states, wave = 1, 0
    table = ProbTable()
    pool = None
    partitioned = partitioned and ctx.is_distributed
    bounds = []  # (start, stop) of every wave
    owned = [] if partitioned else None  # (lo, hi) global indices this rank expanded, per wave
    try:
        held = None  # an MPI wave whose compaction waits for the next wave's expansion
        while len(keys):
            if pool is None:
                pool = _maybe_pool(world_model, workers, len(keys))
            bounds.append((n_states - len(keys), n_states))
            w = _expand_wave(
                world_model, codec, ctx, keys, n_states, pool, table, memory_guard, wave, owned
            )
            if held is not None:
                # The previous wave's compaction runs while this wave's facts travel.
                _compact_wave(held, ctx, K, table, out, owned, w.test)
                held = None
            _settle_wave(w, ctx, table)
            if w.exchange is None:
                _compact_wave(w, ctx, K, table, out, owned)
            else:
                held = w
            keys = w.nxt
            wave += 1
            n_states += len(keys)
            if max_states is not None and n_states > max_states:
                raise WorldError(
                    f"more than {max_states} reachable states after {wave} waves; "
                    "lower --max-steps or raise --max-states"
                )
            if memory_guard is not None and not ctx.is_distributed:  # MPI: inside the wave
                with CLOCK.part("dag_guard"):
                    memory_guard.check(f"after DAG wave {wave} ({n_states} states)")
            # (MPI waves below REPLICATE_WAVE states skip the check: they add little memory.)
            if progress is not None:
                progress(wave, n_states)
        if held is not None:
            _compact_wave(held, ctx, K, table, out, owned)
        # The waves' freed temporaries go back to the system once, here: between waves
        # the next wave reuses them (trimming after every wave made each wave fault its
        # pages in again, ~2 page faults per state, for no lower peak).
        with CLOCK.part("dag_trim"):
            release_free_memory()
    except BaseException:
        if pool is not None:
            pool.close(failed=True)
        raise
    if pool is not None:
        pool.close()
    with CLOCK.part("dag_finish"):
        dag = _finish_batched(world_model, codec, K, table, out, wave, t0, owned)
    dag.wave_bounds = bounds
    if partitioned:
        dag.partition = (ctx.rank, ctx.size, owned)
        dag._num_outcomes = out.total_outcomes
    return dag


def _maybe_pool(world_model, workers: int, wave_size: int):
    """A worker pool once a wave is big enough to split (None otherwise, or when serial)."""
    if workers <= 1 or wave_size < POOL_MIN_WAVE:
        return None
    from .workers import WorkerPool

    return WorkerPool(workers, _init_batch_worker, (world_model,))


class _GrowingDag:
    """The batched builder's arrays, each grown in place (``realloc``) wave by wave.

    Growing in place keeps one copy of what is already there (large blocks are remapped,
    not copied), where joining per-wave pieces at the end would hold everything twice.
    """

    def __init__(self, root_keys: np.ndarray):
        self.keys = np.array(root_keys, dtype=np.int64)
        self.terminal = np.zeros(0, dtype=bool)
        self.counts = np.zeros(0, dtype=np.uint8)
        self.prob_idx = np.zeros(0, dtype=np.uint8)
        self.succ = np.zeros(0, dtype=np.int32)
        self.total_outcomes = 0  # of every rank (a partitioned DAG holds only its own)

    def append_slice(self, name: str, piece: np.ndarray, length: int, at: int) -> None:
        """Grow ``name`` by ``length`` zeros and write ``piece`` at offset ``at`` of them."""
        arr = getattr(self, name)
        n = len(arr)
        arr.resize(n + length, refcheck=False)  # the new entries are zeros
        arr[n + at : n + at + len(piece)] = piece
        setattr(self, name, arr)

    def append(self, name: str, piece: np.ndarray) -> None:
        arr = getattr(self, name)
        piece = piece.reshape(-1)
        if np.result_type(arr.dtype, piece.dtype) != arr.dtype:  # more ids than the type holds
            arr = arr.astype(np.result_type(arr.dtype, piece.dtype))
        n = len(arr)
        arr.resize(n + len(piece), refcheck=False)  # no views of these arrays exist
        arr[n:] = piece
        setattr(self, name, arr)


class _WaveExchange:
    """What each rank found in its share of a wave (new probability values, its sorted
    unique successor keys, its outcome count, its terminal flags for a partitioned DAG,
    the memory guard's verdict) sent to every other rank without a meeting: one message
    per pair of ranks (its size learnt by probing). The ranks compact the previous wave
    meanwhile, calling :meth:`test` between chunks so that the messages progress; a rank
    that is ahead keeps working instead of waiting for its partner."""

    TAG = 75

    def __init__(self, ctx, new: list, keys: np.ndarray, n_out: int, terminal, problem):
        from mpi4py import MPI

        self.ctx, self.status = ctx, MPI.Status()
        text = (problem or "").encode()
        terminal = np.zeros(0, dtype=np.uint8) if terminal is None else terminal.view(np.uint8)
        head = np.array([len(new), len(keys), n_out, len(terminal), len(text)], dtype=np.int64)
        parts = [head, np.asarray(new, dtype=np.float64), np.asarray(keys, dtype=np.int64), terminal]
        payload = np.concatenate([p.view(np.uint8) for p in parts] + [np.frombuffer(text, np.uint8)])
        self.buffers = {ctx.rank: payload}
        self.waiting = [r for r in range(ctx.size) if r != ctx.rank]
        self.requests = [ctx.comm.Isend([payload, MPI.BYTE], dest=r, tag=self.TAG) for r in self.waiting]

    def _receive(self, rank: int, message) -> None:
        from mpi4py import MPI

        buf = np.empty(self.status.Get_count(MPI.BYTE), dtype=np.uint8)
        self.requests.append(message.Irecv([buf, MPI.BYTE]))
        self.buffers[rank] = buf

    def test(self) -> bool:
        """Let the messages progress; True once every message has arrived (and been sent)."""
        from mpi4py import MPI

        for r in list(self.waiting):
            message = self.ctx.comm.Improbe(source=r, tag=self.TAG, status=self.status)
            if message is not None:
                self._receive(r, message)
                self.waiting.remove(r)
        return MPI.Request.Testall(self.requests) and not self.waiting

    def wait(self) -> list[tuple]:
        """``(new, keys, n_out, terminal, problem)`` of every rank, in rank order."""
        from .exchange import wait_until

        wait_until(self.test)  # polls, then sleeps: the core is left to the partner
        facts = []
        for r in range(self.ctx.size):
            buf = self.buffers.pop(r)
            n_new, n_keys, n_out, n_term, n_text = np.frombuffer(buf, np.int64, 5).tolist()
            at = 40
            new = np.frombuffer(buf, np.float64, n_new, at).tolist()
            at += 8 * n_new
            keys = np.frombuffer(buf, np.int64, n_keys, at)
            at += 8 * n_keys
            term = np.frombuffer(buf, np.bool_, n_term, at)
            text = bytes(buf[at + n_term : at + n_term + n_text]).decode() or None
            facts.append((new, keys, n_out, term, text))
        return facts


@dataclass
class _Wave:
    """One wave of the batched builder between its expansion and its compaction."""

    size: int  # states in the wave
    first: int  # global index of its first state
    lo: int  # this rank's share [lo, hi) of the wave
    hi: int
    results: list  # expand_batch results of the share, chunk by chunk
    new: list  # new probability values (this rank's; all ranks' once settled)
    nxt: np.ndarray  # sorted unique successor keys (this rank's; all ranks' once settled)
    n_out: int  # outcomes of this rank's share
    exchange: _WaveExchange | None = None  # None: every rank expanded the whole wave
    facts: list | None = None  # every rank's (new, keys, n_out, terminal, problem)

    def test(self) -> None:
        if self.exchange is not None:
            self.exchange.test()


def _expand_wave(world_model, codec, ctx, keys, n_states, pool, table, memory_guard, wave, owned):
    """Expand this rank's share of a wave and deduplicate its successor keys; under MPI,
    send what it found to the other ranks (:class:`_WaveExchange`) without waiting. A wave
    below ``REPLICATE_WAVE`` states is expanded whole by every rank instead (the same
    numbers everywhere, no message at all: splitting it would cost more). ``owned`` (a
    list, partitioned DAG): gets this rank's ``(lo, hi)`` share."""
    from .timing import CLOCK

    distributed = ctx.is_distributed and len(keys) >= REPLICATE_WAVE
    lo, hi = ctx.work_range(len(keys)) if distributed else (0, len(keys))
    first = n_states - len(keys)
    with CLOCK.part("dag_expand"):
        rows = codec.decode(keys[lo:hi])
        chunks = [rows[a : a + BATCH_STATES] for a in range(0, len(rows), BATCH_STATES)]
        if pool is not None and len(chunks) > 1:
            results = [f.result() for f in [pool.submit(_expand_batch_chunk, c) for c in chunks]]
        else:
            results = [world_model.expand_batch(c) for c in chunks]
        del rows, chunks
    # Chunk by chunk from here on: the raw int64 keys and float64 probabilities of the
    # wave are never joined (that would hold them twice); only compact arrays are.
    with CLOCK.part("dag_dedup"):
        new = sorted(set().union(*(table.new_values(r[2]) for r in results)))
        nxt = _merge_unique([sorted_unique(r[3]) for r in results])  # sorted unique successor keys
        n_out = sum(len(r[3]) for r in results)
    if owned is not None:
        owned.append((first + lo, first + hi))
    w = _Wave(len(keys), first, lo, hi, results, new, nxt, n_out)
    if distributed:
        with CLOCK.part("dag_guard"):
            problem = (
                memory_guard.local_problem(f"in DAG wave {wave + 1} ({n_states} states so far)")
                if memory_guard is not None
                else None
            )
        own_terminal = (
            np.concatenate([r[0] for r in results]).astype(np.bool_) if owned is not None else None
        )
        with CLOCK.part("dag_meet"):
            w.exchange = _WaveExchange(ctx, new, nxt, n_out, own_terminal, problem)
    return w


def _settle_wave(w: _Wave, ctx, table: ProbTable) -> None:
    """Receive the other ranks' facts of wave ``w`` (MPI), merge their successor keys
    into the next wave and add the new probability values to ``table`` (sorted, so the
    table is identical on every rank)."""
    from .timing import CLOCK

    if w.exchange is not None:
        with CLOCK.part("dag_meet"):
            w.facts = facts = w.exchange.wait()
        if any(f[4] for f in facts):
            from .memory import MemoryGuard

            MemoryGuard.raise_first([f[4] for f in facts])
        w.new = sorted(set().union(*(f[0] for f in facts)))
        with CLOCK.part("dag_keys_merge"):
            w.nxt = union_sorted([f[1] for f in facts])
    table.add(w.new)
    if len(table) > 65535:
        raise WorldError("more than 65535 distinct transition probabilities")


def _compact_wave(w: _Wave, ctx, K, table, out, owned, between=None) -> None:
    """Turn wave ``w``'s outcomes into compact arrays (probability ids, successor indices
    into the next wave, whose keys ``w.nxt`` are settled) and append them to ``out``.
    ``between`` is called after every chunk (messages in flight progress meanwhile)."""
    from .timing import CLOCK

    n_states = w.first + w.size  # where the next wave starts
    nxt, results = w.nxt, w.results
    index_dtype = _index_dtype(n_states + len(nxt))
    prob_dtype = _small_uint(max(0, len(table) - 1))
    terminal, counts, prob_idx, succ = [], [], [], []
    with CLOCK.part("dag_compact"):
        position = _SortedIndex(nxt)
        while results:
            t, c, p, sk = results.pop(0)
            terminal.append(t)
            counts.append(c.reshape(-1))
            prob_idx.append(table.index(p))
            i = position(sk)
            i += n_states
            succ.append(i.astype(index_dtype))
            del t, c, p, sk, i
            if between is not None:
                between()
        fields = (("terminal", np.bool_), ("counts", np.uint8), ("prob_idx", prob_dtype), ("succ", index_dtype))
        mine = [_joined(part, dt) for part, (_, dt) in zip((terminal, counts, prob_idx, succ), fields)]
        del terminal, counts, prob_idx, succ
    facts = w.facts
    if facts is None:
        with CLOCK.part("dag_append"):
            for (name, _), arr in zip(fields, mine):
                out.append(name, arr)
            out.total_outcomes += len(mine[3])
    elif owned is not None:
        with CLOCK.part("dag_append"):
            out.append("terminal", np.concatenate([f[3] for f in facts]))
            out.append_slice("counts", mine[1], w.size * K, w.lo * K)
            out.append("prob_idx", mine[2])
            out.append("succ", mine[3])
            out.total_outcomes += sum(f[2] for f in facts)
        del mine
    else:
        from parallel_core.mpi import partition

        # Rank r's share: n_r states (the partition every rank knows) and facts[r][2] outcomes.
        shares = [hi - lo for lo, hi in partition(w.size, ctx.size)]
        layouts = [
            [(n, np.bool_), (n * K, np.uint8), (m, prob_dtype), (m, index_dtype)]
            for n, m in zip(shares, (f[2] for f in facts))
        ]
        sizes = [sum(k * np.dtype(dt).itemsize for k, dt in lay) for lay in layouts]
        with CLOCK.part("dag_exchange"):
            gathered = allgatherv_known(ctx, pack(mine), sizes)
        del mine
        with CLOCK.part("dag_append"):
            pos = 0
            for lay, size in zip(layouts, sizes):
                for (name, _), arr in zip(fields, unpack(gathered[pos : pos + size], lay)):
                    out.append(name, arr)
                pos += size
            out.total_outcomes += sum(f[2] for f in facts)
    if len(nxt):
        out.append("keys", nxt)


class _SortedIndex:
    """Positions of keys in a sorted unique array (every key looked up must be in it):
    ``np.searchsorted``, or one gather from a table over the range when it is dense."""

    def __init__(self, keys: np.ndarray):
        self.keys, self.table = keys, None
        dense = _dense_span(keys)
        if dense is not None:
            self.lo, span = dense
            self.table = np.zeros(span, dtype=np.int64)
            self.table[keys - self.lo] = np.arange(len(keys))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.table is None:
            return np.searchsorted(self.keys, x)
        return self.table[x - self.lo]


def _joined(parts: list, dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def union_sorted(parts: list) -> np.ndarray:
    """Sorted unique values of several sorted unique int64 arrays (the ranks' successor
    keys of a wave). Two ranks' keys overlap only near their border (a state's successors
    lie near it), so only the overlapping range is merged; the rest is copied once."""
    out = np.zeros(0, dtype=np.int64)
    for b in parts:
        a = out
        if not len(a) or not len(b):
            out = a if len(a) else np.asarray(b, dtype=np.int64)
            continue
        lo, hi = max(a[0], b[0]), min(a[-1], b[-1])
        if lo > hi:  # disjoint ranges
            out = np.concatenate([a, b] if a[-1] < b[0] else [b, a])
            continue
        a0, a1 = np.searchsorted(a, lo), np.searchsorted(a, hi, side="right")
        b0, b1 = np.searchsorted(b, lo), np.searchsorted(b, hi, side="right")
        middle = sorted_unique(np.concatenate([a[a0:a1], b[b0:b1]]), kind="stable")
        # below lo (above hi) only one of the two has values: the other slice is empty
        out = np.concatenate([a[:a0], b[:b0], middle, a[a1:], b[b1:]])
    return out


def _merge_unique(sorted_parts: list) -> np.ndarray:
    """Sorted unique values of several sorted unique arrays."""
    if len(sorted_parts) == 1:
        return sorted_parts[0]
    return sorted_unique(_joined(sorted_parts, np.int64), kind="stable")


def _finish_batched(world_model, codec, K, table, out, wave, t0, owned=None) -> Dag:
    from .states import KeyIndex, StateTable

    n_agents, nA = len(world_model.agents), num_actions(world_model)
    keys, terminal, counts = out.keys, out.terminal, out.counts
    N = len(keys)
    # Outcomes per state (einsum: half the time of sum(axis=1) over rows of K uint8 here)
    if owned is None:
        per_state = np.einsum("ij->i", counts.reshape(-1, K), dtype=np.int64)
    else:  # a partitioned DAG: only this rank's states have outcomes (sum those only)
        per_state = np.zeros(N, dtype=np.int64)
        for lo, hi in owned:
            np.einsum("ij->i", counts[lo * K : hi * K].reshape(-1, K), dtype=np.int64, out=per_state[lo:hi])
    state_offsets = np.zeros(N + 1, dtype=_offset_dtype(len(out.succ)))
    np.cumsum(per_state, out=state_offsets[1:])
    del per_state
    st = StateTable(keys, codec)  # waves are sorted and steps increase: globally sorted
    dag = Dag(
        states=st,
        state_to_idx=KeyIndex(st),
        num_agents=n_agents,
        num_actions=nA,
        terminal=terminal,
        counts=counts,
        state_offsets=state_offsets,
        succ=out.succ,
        prob_table=table.values(),
        prob_idx=out.prob_idx,
        step_layered=True,
        waves=wave,
    )
    dag.timings = {"bfs_s": time.perf_counter() - t0, "order_s": 0.0}
    return dag


def _is_step_layered(states: list, src: np.ndarray, succ: np.ndarray) -> bool:
    """True when every state is a tuple starting with an int step and every edge increases it."""
    try:
        steps = np.fromiter((s[0] for s in states), dtype=np.int64, count=len(states))
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    if not all(type(s) is tuple and isinstance(s[0], (int, np.integer)) for s in states[:1000]):
        return False
    return bool(np.all(steps[succ] > steps[src]))


def _topological_order(
    states: list, src: np.ndarray, succ: np.ndarray, step_layered: bool
) -> np.ndarray:
    """Kahn's algorithm, smallest state tuple first; ``sorted(states)`` for step-layered worlds."""
    N = len(states)
    try:
        if step_layered:
            # Every predecessor has a smaller step, so Kahn-smallest-first is plain sorting.
            return np.array(sorted(range(N), key=states.__getitem__), dtype=np.int64)
        edges = np.unique(src * N + succ)
        e_src, e_dst = edges // N, edges % N
        indeg = np.bincount(e_dst, minlength=N)
        out_start = np.searchsorted(e_src, np.arange(N + 1))
        dst_list = e_dst.tolist()
        indeg_list = indeg.tolist()
        heap = [(states[i], i) for i in range(N) if indeg_list[i] == 0]
        heapq.heapify(heap)
        order = []
        while heap:
            _, i = heapq.heappop(heap)
            order.append(i)
            for j in dst_list[out_start[i] : out_start[i + 1]]:
                indeg_list[j] -= 1
                if indeg_list[j] == 0:
                    heapq.heappush(heap, (states[j], j))
    except TypeError as exc:
        raise WorldError(
            f"states must be mutually comparable tuples to be ordered ({exc})"
        ) from None
    if len(order) < N:
        stuck = next(i for i in range(N) if indeg_list[i] > 0)
        raise WorldError(
            f"the world is cyclic: {N - len(order)} of {N} states lie on or behind a cycle "
            f"(e.g. state {states[stuck]!r}); EMPO needs a finite-horizon world (add a step counter)"
        )
    return np.array(order, dtype=np.int64)


def get_dag(world_model, return_probabilities: bool = False, *, workers: int = 1, ctx=None):
    """EMPO-compatible: ``(states, state_to_idx, successors[, transitions])`` as Python lists.

    ``successors[i]`` lists the distinct successor indices of state ``i``;
    ``transitions[i]`` lists ``(action_profile, probs, successor_indices)`` for every joint
    action of a non-terminal state (empty for terminal states).
    """
    dag = build_dag(world_model, workers=workers, ctx=ctx)
    successors = [dag.successors(i) for i in range(len(dag))]
    states = list(dag.states)  # EMPO's API: plain lists and a dict
    state_to_idx = {s: i for i, s in enumerate(states)}
    if not return_probabilities:
        return states, state_to_idx, successors
    joint = joint_actions(dag.num_agents, dag.num_actions)
    transitions = []
    for i in range(len(dag)):
        if dag.terminal[i]:
            transitions.append([])
            continue
        row = []
        for k, actions in enumerate(joint):
            p, s = dag.outcomes(i, k)
            row.append((tuple(actions), p.tolist(), s.tolist()))
        transitions.append(row)
    return states, state_to_idx, successors, transitions


def count_work(dag: Dag) -> dict:
    """Sizes that summaries and benchmarks report."""
    return {
        "states": len(dag),
        "terminal": int(dag.terminal.sum()),
        "joint_actions": dag.num_joint_actions,
        "outcomes": dag.num_outcomes,
        "waves": dag.waves,
        "max_outcomes": int(dag.counts.max()) if len(dag.counts) else 0,
        "log10_states": round(math.log10(max(1, len(dag))), 2),
    }

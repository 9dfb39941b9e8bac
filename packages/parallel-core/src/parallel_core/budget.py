"""The worker budget: one number of cores that nested parallel levels share.

A job that parallelises at several levels (missions x episodes x agents, MPI ranks x
local processes) must never start more workers than the cores it was given.
``WorkerBudget.split`` hands the budget out level by level, outer levels first.
"""

from __future__ import annotations

import math
import os

#: Caps the cores this process may use (set by simulation mode, or by a user sharing a node).
MAX_WORKERS_ENV = "PARALLEL_CORE_MAX_WORKERS"


def _affinity_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity masks
        return os.cpu_count() or 1


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by ``PARALLEL_CORE_MAX_WORKERS``."""
    cores = _affinity_cores()
    cap = os.environ.get(MAX_WORKERS_ENV)
    if cap:
        try:
            cores = min(cores, max(1, int(cap)))
        except ValueError:
            raise ValueError(
                f"{MAX_WORKERS_ENV}={cap!r} is not an integer; unset it or give a core count"
            ) from None
    return max(1, cores)


class WorkerBudget:
    """A total number of worker processes that nested levels split between them.

    ``total=None`` means "all available cores"; a larger request is capped at the cores
    allowed, so ``--jobs 64`` on a laptop cannot oversubscribe it.
    """

    def __init__(self, total: int | None = None):
        cores = available_cores()
        if total is None:
            total = cores
        if total < 0:
            raise ValueError(f"worker budget must be >= 0, got {total}")
        self.requested = total
        self.total = max(1, min(total, cores))

    def split(self, *demands: int) -> tuple[int, ...]:
        """Workers for each nested level, outermost first, with a product <= ``total``.

        Level i gets ``max(1, min(demand_i, remaining))`` workers and every worker of it
        gets ``remaining // n_i`` of what is left for the inner levels.

        >>> WorkerBudget(8).split(3, 4)   # doctest: +SKIP  (depends on the machine's cores)
        (3, 2)
        """
        remaining = self.total
        shares = []
        for demand in demands:
            n = max(1, min(int(demand), remaining))
            shares.append(n)
            remaining = max(1, remaining // n)
        assert math.prod(shares) <= max(self.total, 1)
        return tuple(shares)

    def __repr__(self) -> str:
        return f"WorkerBudget(total={self.total})"

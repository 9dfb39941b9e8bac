"""Wall and CPU seconds of the named parts of a solve, per process.

On a shared machine wall time says little about parallel efficiency; the CPU seconds
of each part on each rank show what does not shrink with the number of ranks. Each
part costs two clock reads per use (a few per wave or level), so the clock always runs.
"""

from __future__ import annotations

import time
from contextlib import contextmanager


class PartClock:
    """Accumulates ``(wall, cpu)`` seconds per part name."""

    def __init__(self) -> None:
        self.parts: dict[str, list[float]] = {}

    def reset(self) -> None:
        self.parts.clear()

    @contextmanager
    def part(self, name: str):
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            acc = self.parts.setdefault(name, [0.0, 0.0])
            acc[0] += time.perf_counter() - w
            acc[1] += time.process_time() - c

    def report(self, digits: int = 4) -> dict:
        """``{part: {"wall_s": ..., "cpu_s": ...}}`` in the order the parts first ran."""
        return {
            k: {"wall_s": round(w, digits), "cpu_s": round(c, digits)}
            for k, (w, c) in self.parts.items()
        }


#: The clock of this process's current solve (reset by ``compute_human_policy_prior``).
CLOCK = PartClock()

"""One-call buffer exchanges between MPI ranks whose sizes every rank already knows.

``parallel_core``'s ``allgatherv`` first agrees on sizes (an extra collective); the DAG
waves and Phase 1 levels know every rank's share in advance (``partition``) or learn it
together with other small facts, so each exchange here is a single ``Allgatherv``: fewer
points where the ranks wait for each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

# Waiting for messages (wait_until): poll this long, then sleep between polls, the pause
# doubling from PAUSE_MIN_S to PAUSE_MAX_S. MPICH's own waits poll without a pause and
# burn the core for as long as the partner takes; a rank that waits here leaves the
# core to whatever else runs (its partner, on a shared machine) for at most
# PAUSE_MAX_S of extra latency per wait (a few dozen waits per solve).
SPIN_S = 2e-4
PAUSE_MIN_S = 5e-5
PAUSE_MAX_S = 1e-3


def wait_until(done: Callable[[], bool]) -> None:
    """Call ``done()`` (an MPI test: it must make the messages progress) until it is true,
    polling for ``SPIN_S`` and then sleeping between polls (see ``PAUSE_*``)."""
    if done():
        return
    spin_until = time.perf_counter() + SPIN_S
    pause = PAUSE_MIN_S
    while not done():
        if time.perf_counter() >= spin_until:
            time.sleep(pause)
            pause = min(2 * pause, PAUSE_MAX_S)


def wait_all(requests: list) -> None:
    """``MPI.Request.Waitall(requests)`` without burning the core (:func:`wait_until`)."""
    from mpi4py import MPI

    if requests:
        wait_until(lambda: MPI.Request.Testall(requests))


def allgatherv_known(ctx, array: np.ndarray, rows: list[int]) -> np.ndarray:
    """Every rank's rows of ``array`` in rank order; rank r contributes ``rows[r]`` rows
    (the same list on every rank; dtype and trailing shape must agree). Non-blocking,
    waited for with :func:`wait_all`: a rank that arrives first leaves its core free
    (MPICH's blocking collectives poll without a pause)."""
    from mpi4py import MPI

    local = np.ascontiguousarray(array)
    if local.shape[0] != rows[ctx.rank]:
        raise ValueError(f"rank {ctx.rank} has {local.shape[0]} rows, expected {rows[ctx.rank]}")
    row_bytes = local.dtype.itemsize * int(np.prod(local.shape[1:], dtype=np.int64))
    counts = np.asarray(rows, dtype=np.int64) * row_bytes
    displs = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(counts[:-1], out=displs[1:])
    out = np.empty((int(sum(rows)),) + local.shape[1:], dtype=local.dtype)
    wait_all([
        ctx.comm.Iallgatherv(
            [local.reshape(-1).view(np.uint8), MPI.BYTE],
            [out.reshape(-1).view(np.uint8), (counts, displs), MPI.BYTE],
        )
    ])
    return out


def allgatherv_in_place(ctx, out: np.ndarray, rows: list[int]) -> None:
    """Fill ``out`` (contiguous; rank r's block of ``rows[r]`` rows at its rank-order
    offset, this rank's block already written there) with every rank's block: one
    ``Allgatherv`` straight into the destination (``MPI_IN_PLACE``), no copies around it
    (non-blocking, waited for with :func:`wait_all`, like :func:`allgatherv_known`)."""
    from mpi4py import MPI

    if not out.flags.c_contiguous or out.shape[0] != sum(rows):
        raise ValueError(f"need a contiguous array of {sum(rows)} rows, got shape {out.shape}")
    row_bytes = out.dtype.itemsize * int(np.prod(out.shape[1:], dtype=np.int64))
    counts = np.asarray(rows, dtype=np.int64) * row_bytes
    displs = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(counts[:-1], out=displs[1:])
    wait_all([ctx.comm.Iallgatherv(MPI.IN_PLACE, [out.reshape(-1).view(np.uint8), (counts, displs), MPI.BYTE])])


def pack(arrays: list[np.ndarray]) -> np.ndarray:
    """The raw bytes of several arrays, one after the other (see :func:`unpack`)."""
    parts = [np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrays]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)


def unpack(buffer: np.ndarray, layout: list[tuple[int, np.dtype]]) -> list[np.ndarray]:
    """Split ``buffer`` into arrays of ``(length, dtype)`` (copies, so each owns its memory)."""
    out, pos = [], 0
    for n, dtype in layout:
        size = n * np.dtype(dtype).itemsize
        out.append(buffer[pos : pos + size].view(dtype).copy())
        pos += size
    return out

"""Replay buffers: a plain ring buffer and a thread-safe wrapper with one lock per buffer.

Every agent owns exactly one buffer; buffers are never shared or pooled. Each stored row
is a full transition ``(obs, action, reward, next_obs, terminated, truncated)``; because
``next_obs`` is stored with its row, sampling is wrap-aware for free: any published slot
``[0, size)`` is a complete transition, also after the write pointer has wrapped around.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")


@dataclass
class Batch:
    """A sampled minibatch; arrays are copies owned by the caller."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


class ReplayBuffer:
    """A fixed-capacity ring of transitions (not thread-safe; see ``ThreadSafeBuffer``)."""

    def __init__(self, capacity: int, obs_dim: int, obs_dtype=np.float32):
        self.capacity = int(capacity)
        self.obs = np.zeros((capacity, obs_dim), dtype=obs_dtype)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=obs_dtype)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=bool)
        self.truncated = np.zeros(capacity, dtype=bool)
        self.ptr = 0  # next slot to write
        self.size = 0  # published rows

    def __len__(self) -> int:
        return self.size

    def _write(self, slot: int, obs, action, reward, next_obs, terminated, truncated) -> None:
        self.obs[slot] = obs
        self.next_obs[slot] = next_obs
        self.actions[slot] = action
        self.rewards[slot] = reward
        self.terminated[slot] = terminated
        self.truncated[slot] = truncated

    def add(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        """Store one transition, overwriting the oldest once full."""
        slot = self.ptr
        self._write(slot, obs, action, reward, next_obs, terminated, truncated)
        # Publish only after the row is complete.
        self.ptr = (slot + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def _gather(self, idx: np.ndarray) -> Batch:
        # Fancy indexing copies, so the batch never aliases buffer memory.
        return Batch(*(getattr(self, f)[idx] for f in FIELDS))

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """``batch_size`` rows drawn uniformly with replacement from the published rows."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return self._gather(rng.integers(0, self.size, size=batch_size))

    def state_dict(self) -> dict:
        state = {f: getattr(self, f).copy() for f in FIELDS}
        state.update(ptr=self.ptr, size=self.size, capacity=self.capacity)
        return state

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(
                f"buffer capacity {state['capacity']} in the checkpoint != configured {self.capacity}"
            )
        for f in FIELDS:
            getattr(self, f)[...] = state[f]
        self.ptr = int(state["ptr"])
        self.size = int(state["size"])


class ThreadSafeBuffer:
    """A ``ReplayBuffer`` guarded by its own lock, for one writer and any number of samplers.

    * One lock per buffer (never a global one), so agents never contend with each other.
    * The writer copies a row *outside* the lock into a reserved slot that samplers cannot
      draw; the row is published (``ptr``/``size`` advanced) only once fully written.
    * ``sample`` gathers a copy under the lock, so training never sees a half-written row and
      the writer can reuse the slot right after.

    ``lock_wait`` accumulates seconds spent waiting for the lock (both sides), for profiling.
    """

    def __init__(self, capacity: int, obs_dim: int, obs_dtype=np.float32):
        self._buf = ReplayBuffer(capacity, obs_dim, obs_dtype)
        self._lock = threading.Lock()
        self._writing = -1  # slot being written outside the lock, excluded from sampling
        self.lock_wait = 0.0

    @property
    def capacity(self) -> int:
        return self._buf.capacity

    def __len__(self) -> int:
        return self._buf.size

    def _acquire(self) -> None:
        if not self._lock.acquire(blocking=False):
            t0 = time.perf_counter()
            self._lock.acquire()
            self.lock_wait += time.perf_counter() - t0

    def add(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        buf = self._buf
        self._acquire()
        try:  # reserve: if the ring is full this slot is live, so hide it from samplers
            slot = buf.ptr
            self._writing = slot
        finally:
            self._lock.release()
        buf._write(slot, obs, action, reward, next_obs, terminated, truncated)
        self._acquire()
        try:  # publish the complete row
            buf.ptr = (slot + 1) % buf.capacity
            buf.size = min(buf.size + 1, buf.capacity)
            self._writing = -1
        finally:
            self._lock.release()

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """A copied minibatch of published rows, never including the slot being written."""
        self._acquire()
        try:
            size, writing = self._buf.size, self._writing
            excluded = writing >= 0 and writing < size
            n = size - 1 if excluded else size
            if n <= 0:
                raise ValueError("cannot sample from an empty replay buffer")
            idx = rng.integers(0, n, size=batch_size)
            if excluded:
                idx += idx >= writing  # skip over the reserved slot
            return self._buf._gather(idx)
        finally:
            self._lock.release()

    def state_dict(self) -> dict:
        with self._lock:
            return self._buf.state_dict()

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            self._buf.load_state_dict(state)

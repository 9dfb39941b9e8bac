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
    """A ``ReplayBuffer`` guarded by its own lock, for any number of writers and samplers.

    * One lock per buffer (never a global one), so agents never contend with each other.
    * ``add`` writes the row *and* publishes it (``ptr``/``size``) under the lock; ``sample``
      gathers a copy under the lock. So no sampler ever sees a half-written or never-written
      row, whatever the number of writers (several environment copies may feed one agent's
      buffer). An earlier design copied the row outside the lock into a reserved slot: with
      one writer that is safe, but two writers could reserve the same slot, and a stress test
      with 4 writers found torn rows. A row is a few hundred bytes, so the copy under the
      lock costs microseconds.

    ``lock_wait`` accumulates seconds spent waiting for the lock (both sides), for profiling.
    """

    def __init__(self, capacity: int, obs_dim: int, obs_dtype=np.float32):
        self._buf = ReplayBuffer(capacity, obs_dim, obs_dtype)
        self._lock = threading.Lock()
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
        """Store one complete transition (safe with concurrent writers and samplers)."""
        self._acquire()
        try:
            self._buf.add(obs, action, reward, next_obs, terminated, truncated)
        finally:
            self._lock.release()

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """A copied minibatch of complete rows, drawn uniformly with replacement."""
        self._acquire()
        try:
            return self._buf.sample(batch_size, rng)
        finally:
            self._lock.release()

    def state_dict(self) -> dict:
        with self._lock:
            return self._buf.state_dict()

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            self._buf.load_state_dict(state)

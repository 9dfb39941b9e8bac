"""The background learner: a thread that trains while the main thread collects experience.

* Driven by a ``threading.Condition``: the collector publishes its step count and notifies
  only when a new training round became due; the learner sleeps in ``wait_for`` otherwise
  (no polling, no busy-wait).
* Bounded replay ratio (``UpdateSchedule``): the learner never trains beyond the rounds the
  collected steps allow, and the collector blocks while the learner is more than ``slack``
  rounds behind, so a faster or slower learner does not change the algorithm.
* After every ``snapshot_interval`` rounds it publishes an immutable ``PolicySnapshot`` by
  swapping one reference; acting reads ``learner.snapshot`` and never touches the live nets.
* ``stop()`` sets the stop event, lets the learner finish the rounds already due (or abandon
  them with ``drain=False``) and joins it. An exception inside the learner wakes the
  collector and is re-raised in the main thread by ``check()``/``wait_for_capacity()``/``stop()``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import torch

from .acting import PolicySnapshot, make_snapshot
from .schedule import UpdateSchedule
from .training import SerialTrainer


class BackgroundLearner:
    def __init__(
        self,
        trainer: SerialTrainer,
        schedule: UpdateSchedule,
        snapshot_interval: int = 1,
        rounds_done: int = 0,
        env_steps: int = 0,
    ):
        self.trainer = trainer
        self.agents = trainer.agents
        self.schedule = schedule
        self.snapshot_interval = snapshot_interval
        self.rounds = rounds_done  # completed rounds (read by the collector)
        self.snapshot: PolicySnapshot = make_snapshot(self.agents, rounds_done)
        self.train_lock = threading.Lock()  # held during a round; checkpoints take it to pause
        self.busy_time = 0.0  # seconds spent inside training rounds
        self.losses: list[float] = []  # mean loss of each round since the last drain_losses()
        self._steps = env_steps
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._abort = False
        self._error: BaseException | None = None
        # torch's intra-op thread count is per OS thread (an OpenMP setting): a new thread
        # starts at the core count, which oversubscribes the cores and made training ~50x
        # slower in measurements. The learner adopts the creating thread's setting.
        self._torch_threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._run, name="background-learner", daemon=True)

    # -- collector side -------------------------------------------------------------------
    def start(self) -> BackgroundLearner:
        self._thread.start()
        return self

    def publish_steps(self, env_steps: int) -> None:
        """Tell the learner how many environment steps exist; wakes it only if a round is due."""
        with self._cond:
            self._steps = env_steps
            if self.schedule.allowed(env_steps) > self.rounds:
                self._cond.notify_all()

    def wait_for_capacity(self) -> float:
        """Block while the learner is more than ``slack`` rounds behind; returns seconds waited."""
        self.check()
        limit = self.schedule.slack
        with self._cond:
            if self.schedule.allowed(self._steps) - self.rounds <= limit:
                return 0.0
            t0 = time.perf_counter()
            self._cond.wait_for(
                lambda: (
                    self._error is not None
                    or self._stop.is_set()
                    or self.schedule.allowed(self._steps) - self.rounds <= limit
                )
            )
            waited = time.perf_counter() - t0
        self.check()
        return waited

    def check(self) -> None:
        """Re-raise, in the calling thread, an exception that killed the learner."""
        err = self._error
        if err is not None:
            self._error = None
            self._stop.set()
            self._thread.join()
            raise err

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the learner between rounds (for checkpoints and evaluation of live weights)."""
        with self.train_lock:
            yield

    def stop(self, drain: bool = True) -> None:
        """Stop and join; with ``drain`` the rounds already due are trained first."""
        with self._cond:
            self._abort = not drain
            self._stop.set()
            self._cond.notify_all()
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join()
        self.trainer.close()
        self.check()

    def drain_losses(self) -> list[float]:
        with self._cond:
            out, self.losses = self.losses, []
        return out

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- learner thread -------------------------------------------------------------------
    def _due(self) -> bool:
        return self.schedule.allowed(self._steps) > self.rounds

    def _run(self) -> None:
        torch.set_num_threads(self._torch_threads)
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._stop.is_set() or self._due())
                    if self._abort or not self._due():
                        return  # stopped, and nothing (more) to drain
                with self.train_lock:
                    t0 = time.perf_counter()
                    losses = self.trainer.round()
                    done = self.rounds + 1
                    if done % self.snapshot_interval == 0:
                        self.snapshot = make_snapshot(self.agents, done)  # atomic reference swap
                    self.busy_time += time.perf_counter() - t0
                    # Count the round before releasing train_lock: a checkpoint taken in
                    # paused() must never see a round's weights without its count.
                    # (Lock order is always train_lock -> _cond; nobody takes the reverse.)
                    with self._cond:
                        self.losses.append(sum(losses) / len(losses))
                        self.rounds = done
                        self._cond.notify_all()  # the collector may be waiting for capacity
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            err.add_note("(raised in the background learner thread)")
            with self._cond:
                self._error = err
                self._cond.notify_all()

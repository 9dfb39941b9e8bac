"""A learner *process* beside collection: no GIL shared with the collector.

Same interface as ``learner_thread.BackgroundLearner`` (``start``, ``publish_steps``,
``wait_for_capacity``, ``snapshot``, ``rounds``, ``drain_losses``, ``stop``), so
``Experiment`` swaps one for the other (``parallel.learner``).

* **Transitions streamed**: the collector keeps writing each agent's own buffer; at every
  ``train_interval`` boundary the rows added since the last boundary are sent (one message,
  numpy arrays) and the learner appends them to its own copy of each agent's buffer. The
  learner's buffers therefore hold exactly the collector's rows, in the same order.
* **Parameters in shared memory, versioned**: one ``(num_agents, P)`` float32 tensor in
  shared memory plus a version counter, written under a lock after every
  ``snapshot_interval`` rounds; the collector copies it (under the same lock, microseconds)
  when the version changed and acts from that ``PolicySnapshot``.
* **Bounded replay ratio** (``UpdateSchedule``): the learner trains only the rounds that the
  steps it has received allow; the collector waits while the learner is more than ``slack``
  rounds behind. With ``deterministic=True`` the collector waits at every boundary until
  every due round is trained and published: acting then uses exactly the weights of the
  sequential loop, so runs are bit-identical to it (tested).
* **Failures are reported within a bounded time**: the collector never blocks for more than
  ``poll_s`` without checking that the learner is alive and has not sent an error; a learner
  exception (with its traceback text) or death raises ``LearnerError`` in the main process.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing as mp
import queue
import signal
import time
import traceback

import numpy as np
import torch

from parallel_core.pools import _die_with_parent, choose_start_method, limit_worker_threads

from .acting import PolicySnapshot
from .buffers import FIELDS
from .errors import LearnerError
from .schedule import UpdateSchedule


def _flat_params(agent) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for _, p in agent.named_params])


def _dump(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=False)


def _learner_main(spec: dict, inbox, outbox, params, version, rounds, lock, cond, stats) -> None:
    """The learner process: rebuild the agents, then train on streamed rows until told to stop."""
    try:
        # Ctrl-C goes to the whole process group: the main process alone decides; and if the
        # main process dies, Linux kills this one too (no orphan blocked on its inbox).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent()
        limit_worker_threads()
        from .learners.dqn import make_agents
        from .training import make_trainer

        agents = make_agents(*spec["agent_args"])
        for agent, state in zip(agents, _load(spec["agent_states"])):
            state["buffer"] = agent.buffer.state_dict()  # rows arrive through the inbox
            agent.load_state_dict(state)
        trainer = make_trainer(agents, *spec["trainer_args"])
        schedule = UpdateSchedule(*spec["schedule_args"])
        snapshot_interval = spec["snapshot_interval"]
        done, steps = spec["rounds_done"], spec["env_steps"]
        busy, loss_sum, loss_n = stats  # shared counters the collector reads per epoch

        def train_round() -> None:
            t0 = time.perf_counter()
            loss = float(np.mean(trainer.round()))
            busy.value += time.perf_counter() - t0
            loss_sum.value += loss
            loss_n.value += 1

        while True:
            due = schedule.allowed(steps) > done
            try:
                msg = inbox.get(block=not due, timeout=None if not due else 0)
            except queue.Empty:
                msg = None
            if msg is not None:
                kind = msg[0]
                if kind == "rows":
                    _, steps_now, chunks = msg
                    for agent, chunk in zip(agents, chunks):
                        buf = agent.buffer
                        for k in range(len(chunk["actions"])):
                            buf.add(*(chunk[f][k] for f in FIELDS))
                    steps = steps_now
                elif kind in ("state", "stop"):
                    while schedule.allowed(steps) > done:  # the rounds already due first
                        train_round()
                        done += 1
                        _publish(agents, params, version, rounds, lock, cond, done)
                    state = [a.state_dict() for a in agents]
                    for s in state:
                        s.pop("buffer")  # the collector holds identical rows
                    outbox.put(("state", done, _dump(state)))
                    if kind == "stop":
                        trainer.close()
                        return
                elif kind == "abort":
                    trainer.close()
                    return
                continue
            train_round()
            done += 1
            if done % snapshot_interval == 0 or schedule.allowed(steps) == done:
                _publish(agents, params, version, rounds, lock, cond, done)
            else:
                with cond:
                    rounds.value = done
                    cond.notify_all()
    except BaseException as err:  # noqa: BLE001 - reported to the main process
        with contextlib.suppress(Exception):
            outbox.put(("error", f"{type(err).__name__}: {err}", traceback.format_exc()))


def _publish(agents, params, version, rounds, lock, cond, done: int) -> None:
    flat = torch.stack([_flat_params(a) for a in agents])
    with lock:
        params.copy_(flat)
        version.value = done
    with cond:
        rounds.value = done
        cond.notify_all()


class ProcessLearner:
    """The learner in its own process (module docstring); drop-in for ``BackgroundLearner``."""

    def __init__(
        self,
        agents,
        agent_args: tuple,
        trainer_args: tuple,
        schedule: UpdateSchedule,
        snapshot_interval: int = 1,
        rounds_done: int = 0,
        env_steps: int = 0,
        deterministic: bool = False,
        poll_s: float = 0.5,
    ):
        self.agents = agents
        self.schedule = schedule
        self.deterministic = deterministic
        self.poll_s = poll_s
        self._ctx = mp.get_context(choose_start_method())
        n = len(agents)
        self._names = [(name, p.shape, p.numel()) for name, p in agents[0].named_params]
        width = sum(k for _, _, k in self._names)
        self._params = torch.zeros(n, width).share_memory_()
        self._params.copy_(torch.stack([_flat_params(a) for a in agents]))
        self._version = self._ctx.Value("q", rounds_done, lock=False)
        self._rounds = self._ctx.Value("q", rounds_done, lock=False)
        self._lock = self._ctx.Lock()
        self._cond = self._ctx.Condition()
        self._inbox = self._ctx.Queue()
        self._outbox = self._ctx.Queue()
        self._stats = (self._ctx.Value("d", 0.0), self._ctx.Value("d", 0.0), self._ctx.Value("q", 0))
        self._loss_seen = (0.0, 0)
        state = []
        for a in agents:
            s = a.state_dict()
            s.pop("buffer")
            state.append(s)
        self._spec = {
            "agent_args": agent_args,
            "agent_states": _dump(state),
            "trainer_args": trainer_args,
            "schedule_args": (schedule.replay_ratio, schedule.train_interval, schedule.learning_starts),
            "snapshot_interval": snapshot_interval,
            "rounds_done": rounds_done,
            "env_steps": env_steps,
        }
        self._initial_rows = [len(a.buffer) for a in agents]
        self._sent_ptr = [a.buffer._buf.ptr for a in agents]
        self._sent_steps = env_steps
        self._snap_version = -1
        self._pending_reply: tuple | None = None
        self._snapshot: PolicySnapshot | None = None
        self._final_rounds = rounds_done
        self._process = self._ctx.Process(
            target=_learner_main,
            args=(self._spec, self._inbox, self._outbox, self._params, self._version,
                  self._rounds, self._lock, self._cond, self._stats),
            name="agent-train-learner",
            daemon=True,
        )

    # -- collector side -------------------------------------------------------------------
    def start(self) -> ProcessLearner:
        self._process.start()
        # the learner rebuilds its buffers from the collector's rows so far (resume)
        if any(self._initial_rows):
            self._send_rows(self._sent_steps, full=True)
        return self

    @property
    def rounds(self) -> int:
        return int(self._rounds.value) if self._process.is_alive() else self._final_rounds

    def _rows_since(self, agent_idx: int, full: bool) -> dict:
        buf = self.agents[agent_idx].buffer._buf
        if full:  # every stored row, oldest first
            idx = np.arange(buf.ptr - buf.size, buf.ptr) % buf.capacity
        else:
            start = self._sent_ptr[agent_idx]
            count = (buf.ptr - start) % buf.capacity
            idx = np.arange(start, start + count) % buf.capacity
        self._sent_ptr[agent_idx] = buf.ptr
        return {f: getattr(buf, f)[idx] for f in FIELDS}

    def _send_rows(self, env_steps: int, full: bool = False) -> None:
        chunks = [self._rows_since(i, full) for i in range(len(self.agents))]
        self._inbox.put(("rows", env_steps, chunks))
        self._sent_steps = env_steps

    def publish_steps(self, env_steps: int) -> None:
        """At a training boundary, stream the new rows and the step count to the learner."""
        if self.schedule.is_boundary(env_steps) and env_steps != self._sent_steps:
            self._send_rows(env_steps)

    def wait_for_capacity(self) -> float:
        """Block while the learner is too far behind (deterministic: any round behind)."""
        self.check()
        limit = 0 if self.deterministic else self.schedule.slack
        due = self.schedule.allowed(self._sent_steps)
        if due - int(self._rounds.value) <= limit:
            return 0.0
        t0 = time.perf_counter()
        while due - int(self._rounds.value) > limit:
            with self._cond:
                self._cond.wait_for(
                    lambda: due - int(self._rounds.value) <= limit, timeout=self.poll_s
                )
            self.check()  # an error or a dead learner is reported within poll_s
        return time.perf_counter() - t0

    @property
    def snapshot(self) -> PolicySnapshot:
        """The latest published parameters (copied only when their version changed)."""
        v = int(self._version.value)
        if self._snapshot is None or v != self._snap_version:
            with self._lock:  # one copy, straight onto the acting device
                flat = self._params.to(self.agents[0].device, copy=True)
                v = int(self._version.value)
            stacked, col = {}, 0
            for name, shape, k in self._names:
                stacked[name] = flat[:, col : col + k].reshape(len(self.agents), *shape)
                col += k
            self._snapshot = PolicySnapshot(v, stacked)
            self._snap_version = v
        return self._snapshot

    def check(self) -> None:
        """Raise ``LearnerError`` if the learner reported an exception or died."""
        try:
            msg = self._outbox.get_nowait()
        except queue.Empty:
            msg = None
        if msg is not None:
            if msg[0] == "error":
                self._kill()
                raise LearnerError(f"the learner process failed: {msg[1]}")
            self._pending_reply = msg  # a state reply read early; kept for _request
        if not self._process.is_alive():
            code = self._process.exitcode
            raise LearnerError(
                f"the learner process died (exit code {code}); the last checkpoint is intact"
            )

    def _request(self, kind: str) -> tuple:
        self._inbox.put((kind,))
        while True:
            reply = self._pending_reply
            if reply is not None:
                self._pending_reply = None
            else:
                try:
                    reply = self._outbox.get(timeout=self.poll_s)
                except queue.Empty:
                    if not self._process.is_alive():
                        raise LearnerError(
                            f"the learner process died (exit code {self._process.exitcode})"
                        ) from None
                    continue
            if reply[0] == "error":
                self._kill()
                raise LearnerError(f"the learner process failed: {reply[1]}")
            return reply

    def sync_agents(self) -> int:
        """Copy the learner's agents (weights, optimisers, RNGs, counters) into ``self.agents``.

        Trains the rounds already due first; returns the round count. Used by checkpoints
        and at the end of a run, so the collector's agents equal the learner's.
        """
        _, done, data = self._request("state")
        self._absorb(done, data)
        return done

    def _absorb(self, done, data) -> None:
        for agent, state in zip(self.agents, _load(data)):
            state["buffer"] = agent.buffer.state_dict()  # identical rows, kept locally
            # acting's RNG lives in the collector; the learner's copy never moved
            state["act_rng"] = agent.act_rng.bit_generator.state
            agent.load_state_dict(state)
        self._final_rounds = done

    @property
    def busy_time(self) -> float:
        """Seconds the learner process spent inside training rounds."""
        return float(self._stats[0].value)

    @contextlib.contextmanager
    def paused(self):
        """Checkpoints call ``sync_agents`` inside; nothing else to pause across processes."""
        yield

    def drain_losses(self) -> list[float]:
        """The mean loss of the rounds trained since the last call (one value, or none)."""
        total, n = float(self._stats[1].value), int(self._stats[2].value)
        seen_total, seen_n = self._loss_seen
        self._loss_seen = (total, n)
        return [(total - seen_total) / (n - seen_n)] if n > seen_n else []

    def stop(self, drain: bool = True) -> None:
        """Stop the learner; with ``drain`` train the due rounds and bring its agents back."""
        if not self._process.is_alive():
            self._process.join(timeout=1)
            return
        if drain:
            _, done, data = self._request("stop")
            self._absorb(done, data)
            self._process.join(timeout=30)
        self._kill()

    def _kill(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(Exception):
                self._inbox.put(("abort",))
            self._process.join(timeout=2)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

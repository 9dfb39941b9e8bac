"""Learner *processes* beside collection: no GIL shared with the collector.

Same interface as ``learner_thread.BackgroundLearner`` (``start``, ``publish_steps``,
``wait_for_capacity``, ``snapshot``, ``rounds``, ``drain_losses``, ``stop``), so
``Experiment`` swaps one for the other (``parallel.learner``).

* **Agents split over K processes** (``parallel.learners``): agents are independent
  learners, so learner process k owns a fixed contiguous block of agents (their networks,
  optimisers, sampling RNGs and buffer copies) and nothing else. With one process training
  is bounded by one core; with K it spreads over K cores.
* **Transitions streamed**: the collector keeps writing each agent's own buffer; at every
  ``train_interval`` boundary the rows added since the last boundary are sent to each
  agent's owner only (one message per process, numpy arrays) and the owner appends them to
  its own copy of the agent's buffer. The learners' buffers therefore hold exactly the
  collector's rows, in the same order.
* **Parameters in shared memory, versioned**: one ``(num_agents, P)`` float32 tensor in
  shared memory; process k writes only its agents' rows, under one lock, after every
  ``snapshot_interval`` rounds, and bumps its own version counter. The collector copies the
  tensor (microseconds) when any version changed and acts from that ``PolicySnapshot``,
  whose version is the oldest of the K.
* **Bounded replay ratio** (``UpdateSchedule``): each learner trains only the rounds that the
  steps it has received allow; the collector waits while the slowest learner is more than
  ``slack`` rounds behind. With ``deterministic=True`` the collector waits at every boundary
  until every learner has trained and published every due round: acting then uses exactly
  the weights of the sequential loop, so runs are bit-identical to it (tested, K = 1 and 2).
* **Failures are reported within a bounded time**: the collector never blocks for more than
  ``poll_s`` without checking that every learner is alive and has not sent an error; an
  exception in any learner (with its traceback text) or its death raises ``LearnerError``
  in the main process and stops the others.
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


def split_agents(num_agents: int, learners: int) -> list[range]:
    """Contiguous, nearly equal blocks of agent indices, one per learner process."""
    k = max(1, min(learners, num_agents))
    bounds = np.linspace(0, num_agents, k + 1).round().astype(int)
    return [range(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _learner_main(spec: dict, owned: range, inbox, outbox, params, version, rounds, lock,
                  wake, stats) -> None:
    """One learner process: rebuild its agents, then train on streamed rows until told to stop."""
    try:
        # Ctrl-C goes to the whole process group: the main process alone decides; and if the
        # main process dies, Linux kills this one too (no orphan blocked on its inbox).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent()
        limit_worker_threads()
        from .learners.dqn import make_agents
        from .training import make_trainer

        # every agent's seeds come from the same SeedSequence spawn as in the collector
        agents = make_agents(*spec["agent_args"])[owned.start : owned.stop]
        for agent, state in zip(agents, _load(spec["agent_states"])[owned.start : owned.stop]):
            state["buffer"] = agent.buffer.state_dict()  # rows arrive through the inbox
            agent.load_state_dict(state)
        trainer = make_trainer(agents, *spec["trainer_args"])
        schedule = UpdateSchedule(*spec["schedule_args"])
        snapshot_interval = spec["snapshot_interval"]
        done, steps = spec["rounds_done"], spec["env_steps"]
        busy, loss_sum, loss_n, cpu = stats  # shared counters the collector reads per epoch
        rows = params[owned.start : owned.stop]  # this learner's share of the shared tensor

        def train_round() -> None:
            t0 = time.perf_counter()
            losses = trainer.round()
            busy.value += time.perf_counter() - t0
            cpu.value = time.process_time()  # this process's CPU seconds so far (user + sys)
            loss_sum.value += float(np.sum(losses))
            loss_n.value += len(losses)

        def notify() -> None:  # never blocks: a wake-up already pending is enough
            with contextlib.suppress(ValueError):
                wake.release()

        def publish() -> None:
            flat = torch.stack([_flat_params(a) for a in agents])
            with lock:
                rows.copy_(flat)
                version.value = done
            rounds.value = done
            notify()

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
                        publish()
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
                publish()
            else:
                rounds.value = done
                notify()
    except BaseException as err:  # noqa: BLE001 - reported to the main process
        with contextlib.suppress(Exception):
            outbox.put(("error", f"{type(err).__name__}: {err}", traceback.format_exc()))


class _Learner:
    """One learner process, its agents (``owned``) and its channels."""

    def __init__(self, ctx, k: int, owned: range, spec: dict, shared: tuple, rounds_done: int):
        params, lock, wake = shared
        self.k, self.owned = k, owned
        self.version = ctx.Value("q", rounds_done, lock=False)
        self.rounds = ctx.Value("q", rounds_done, lock=False)
        self.inbox, self.outbox = ctx.Queue(), ctx.Queue()
        self.stats = (ctx.Value("d", 0.0), ctx.Value("d", 0.0), ctx.Value("q", 0), ctx.Value("d", 0.0))
        self.pending_reply: tuple | None = None
        self.process = ctx.Process(
            target=_learner_main,
            args=(spec, owned, self.inbox, self.outbox, params, self.version, self.rounds,
                  lock, wake, self.stats),
            name=f"agent-train-learner-{k}",
            daemon=True,
        )

    def name(self, total: int) -> str:
        a, b = self.owned.start, self.owned.stop - 1
        who = f"agent {a}" if a == b else f"agents {a}-{b}"
        return "the learner process" if total == 1 else f"learner process {self.k} ({who})"


class ProcessLearner:
    """The learner in ``learners`` processes (module docstring); drop-in for ``BackgroundLearner``."""

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
        learners: int = 1,
        max_lag: int = 0,
    ):
        self.agents = agents
        self.schedule = schedule
        # the collector waits while the slowest learner is more than this many rounds behind
        self.slack = max_lag or 4 * schedule.slack
        self.deterministic = deterministic
        self.poll_s = poll_s
        self._ctx = mp.get_context(choose_start_method())
        n = len(agents)
        self._names = [(name, p.shape, p.numel()) for name, p in agents[0].named_params]
        width = sum(k for _, _, k in self._names)
        self._params = torch.zeros(n, width).share_memory_()
        self._params.copy_(torch.stack([_flat_params(a) for a in agents]))
        self._lock = self._ctx.Lock()
        # A binary wake-up the learners set after every round and the collector waits on.
        # Not a Condition: ``multiprocessing.Condition.notify`` blocks the notifier until
        # the waiter has woken, a rendezvous with the collector's scheduling on every round.
        self._wake = self._ctx.BoundedSemaphore(1)
        self._wake.acquire()
        self._loss_seen = (0.0, 0)
        state = []
        for a in agents:
            s = a.state_dict()
            s.pop("buffer")
            state.append(s)
        spec = {
            "agent_args": agent_args,
            "agent_states": _dump(state),
            "trainer_args": trainer_args,
            "schedule_args": (schedule.replay_ratio, schedule.train_interval, schedule.learning_starts),
            "snapshot_interval": snapshot_interval,
            "rounds_done": rounds_done,
            "env_steps": env_steps,
        }
        shared = (self._params, self._lock, self._wake)
        self._learners = [
            _Learner(self._ctx, k, owned, spec, shared, rounds_done)
            for k, owned in enumerate(split_agents(n, learners))
        ]
        self._initial_rows = [len(a.buffer) for a in agents]
        self._sent_ptr = [a.buffer._buf.ptr for a in agents]
        self._sent_steps = env_steps
        self._snap_versions: tuple | None = None
        self._snapshot: PolicySnapshot | None = None
        self._final_rounds = rounds_done
        self._check_every_s = poll_s  # see wait_for_capacity
        self._next_check = 0.0

    @property
    def processes(self) -> list:
        return [lp.process for lp in self._learners]

    @property
    def _process(self):  # the first (or only) learner process
        return self._learners[0].process

    # -- collector side -------------------------------------------------------------------
    def start(self) -> ProcessLearner:
        for lp in self._learners:
            lp.process.start()
        # the learners rebuild their buffers from the collector's rows so far (resume)
        if any(self._initial_rows):
            self._send_rows(self._sent_steps, full=True)
        return self

    def _all_alive(self) -> bool:
        return all(lp.process.is_alive() for lp in self._learners)

    def _min_rounds(self) -> int:
        return min(int(lp.rounds.value) for lp in self._learners)

    @property
    def rounds(self) -> int:
        return self._min_rounds() if self._all_alive() else self._final_rounds

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
        for lp in self._learners:  # each agent's rows go to its owner only
            chunks = [self._rows_since(i, full) for i in lp.owned]
            lp.inbox.put(("rows", env_steps, chunks))
        self._sent_steps = env_steps

    def publish_steps(self, env_steps: int) -> None:
        """At a training boundary, stream the new rows and the step count to the learners."""
        if self.schedule.is_boundary(env_steps) and env_steps != self._sent_steps:
            self._send_rows(env_steps)

    def wait_for_capacity(self) -> float:
        """Block while the slowest learner is too far behind (deterministic: any round behind).

        Learner errors and deaths are checked at most every ``poll_s`` while the collector
        runs freely (polling two queues and ``waitpid`` on every step was about a fifth of
        the collector's CPU time) and after every ``poll_s`` of waiting, so either is still
        reported within about ``poll_s``: a dead or failed learner stops advancing, and the
        collector then waits.
        """
        now = time.monotonic()
        if now >= self._next_check:
            self.check()
            self._next_check = now + self._check_every_s
        limit = 0 if self.deterministic else self.slack
        due = self.schedule.allowed(self._sent_steps)
        if due - self._min_rounds() <= limit:
            return 0.0
        t0 = time.perf_counter()
        while True:
            self._wake.acquire(False)  # forget an old wake-up, then test: none is lost
            if due - self._min_rounds() <= limit:
                break
            self._wake.acquire(timeout=self.poll_s)
            self.check()  # an error or a dead learner is reported within poll_s
        return time.perf_counter() - t0

    @property
    def snapshot(self) -> PolicySnapshot:
        """The latest published parameters (copied only when a version changed)."""
        versions = tuple(int(lp.version.value) for lp in self._learners)
        if self._snapshot is None or versions != self._snap_versions:
            with self._lock:  # one copy, straight onto the acting device
                flat = self._params.to(self.agents[0].device, copy=True)
                versions = tuple(int(lp.version.value) for lp in self._learners)
            stacked, col = {}, 0
            for name, shape, k in self._names:
                stacked[name] = flat[:, col : col + k].reshape(len(self.agents), *shape)
                col += k
            self._snapshot = PolicySnapshot(min(versions), stacked)
            self._snap_versions = versions
        return self._snapshot

    def _failed(self, lp: _Learner, msg: tuple) -> LearnerError:
        self._kill()
        return LearnerError(f"{lp.name(len(self._learners))} failed: {msg[1]}")

    def _died(self, lp: _Learner, tail: str = "") -> LearnerError:
        self._kill()
        code = lp.process.exitcode
        return LearnerError(f"{lp.name(len(self._learners))} died (exit code {code}){tail}")

    def check(self) -> None:
        """Raise ``LearnerError`` if any learner reported an exception or died."""
        for lp in self._learners:
            try:
                msg = lp.outbox.get_nowait()
            except queue.Empty:
                msg = None
            if msg is not None:
                if msg[0] == "error":
                    raise self._failed(lp, msg)
                lp.pending_reply = msg  # a state reply read early; kept for _request
        for lp in self._learners:
            if not lp.process.is_alive():
                raise self._died(lp, "; the last checkpoint is intact")

    def _reply(self, lp: _Learner) -> tuple:
        while True:
            reply = lp.pending_reply
            if reply is not None:
                lp.pending_reply = None
            else:
                try:
                    reply = lp.outbox.get(timeout=self.poll_s)
                except queue.Empty:
                    for other in self._learners:  # any learner's failure ends the wait
                        if other is not lp:
                            with contextlib.suppress(queue.Empty):
                                msg = other.outbox.get_nowait()
                                if msg[0] == "error":
                                    raise self._failed(other, msg) from None
                                other.pending_reply = msg
                        if not other.process.is_alive():
                            raise self._died(other) from None
                    continue
            if reply[0] == "error":
                raise self._failed(lp, reply)
            return reply

    def _request(self, kind: str) -> tuple[int, list]:
        for lp in self._learners:
            lp.inbox.put((kind,))
        done, states = [], []
        for lp in self._learners:
            _, d, data = self._reply(lp)
            done.append(d)
            states.extend(_load(data))
        return min(done), states

    def sync_agents(self) -> int:
        """Copy the learners' agents (weights, optimisers, RNGs, counters) into ``self.agents``.

        Trains the rounds already due first; returns the round count. Used by checkpoints
        and at the end of a run, so the collector's agents equal the learners'.
        """
        done, states = self._request("state")
        self._absorb(done, states)
        return done

    def _absorb(self, done: int, states: list) -> None:
        for agent, state in zip(self.agents, states):
            state["buffer"] = agent.buffer.state_dict()  # identical rows, kept locally
            # acting's RNG lives in the collector; the learner's copy never moved
            state["act_rng"] = agent.act_rng.bit_generator.state
            agent.load_state_dict(state)
        self._final_rounds = done

    @property
    def busy_time(self) -> float:
        """Seconds the learner processes spent inside training rounds (summed over them)."""
        return float(sum(lp.stats[0].value for lp in self._learners))

    @property
    def cpu_times(self) -> list[float]:
        """CPU seconds (user + sys) of each learner process, as of its last training round."""
        return [float(lp.stats[3].value) for lp in self._learners]

    @contextlib.contextmanager
    def paused(self):
        """Checkpoints call ``sync_agents`` inside; nothing else to pause across processes."""
        yield

    def drain_losses(self) -> list[float]:
        """The mean per-agent loss of the updates trained since the last call (one value, or none)."""
        total = float(sum(lp.stats[1].value for lp in self._learners))
        n = int(sum(lp.stats[2].value for lp in self._learners))
        seen_total, seen_n = self._loss_seen
        self._loss_seen = (total, n)
        return [(total - seen_total) / (n - seen_n)] if n > seen_n else []

    def stop(self, drain: bool = True) -> None:
        """Stop the learners; with ``drain`` train the due rounds and bring their agents back."""
        if not self._all_alive():
            self._kill()
            return
        if drain:
            done, states = self._request("stop")
            self._absorb(done, states)
            for lp in self._learners:
                lp.process.join(timeout=30)
        self._kill()

    def _kill(self) -> None:
        for lp in self._learners:
            if lp.process.is_alive():
                with contextlib.suppress(Exception):
                    lp.inbox.put(("abort",))
        for lp in self._learners:
            if lp.process.is_alive():
                lp.process.join(timeout=2)
            if lp.process.is_alive():
                lp.process.kill()
                lp.process.join(timeout=5)

    @property
    def alive(self) -> bool:
        return self._all_alive()

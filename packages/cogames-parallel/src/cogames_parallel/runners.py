"""Task runners over the flat (mission x episode) list: serial, process pool, MPI.

A runner takes the precomputed tasks and returns one result per task, in task order,
whatever order they finished in. The episode code (``rollout.run_episode``) is the
same in all of them; only where it runs changes.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any

from cogames_parallel.agent_workers import InProcessAgents, WorkerAgents
from cogames_parallel.procs import exit_description, mp_context, stop_process, worker_setup
from cogames_parallel.rollout import EpisodeResult, failed_result, run_episode
from cogames_parallel.tasks import EvalTask

OnResult = Callable[[EpisodeResult], None]


class EpisodeEngine:
    """Runs episodes in this process, its agents in-process or on persistent agent workers."""

    def __init__(self, agent_workers: int = 1) -> None:
        self.agents = WorkerAgents(agent_workers) if agent_workers > 1 else InProcessAgents()

    def start(self) -> None:
        if isinstance(self.agents, WorkerAgents):
            for i in range(self.agents.pool.n):
                self.agents.pool.ensure(i)

    def run(self, task):
        if isinstance(task, EvalTask):
            return run_episode(task, self.agents)
        # a real CoGames episode (upstream.UpstreamTask): upstream's own rollout in this
        # process, its policies on the agent workers if there are any
        from cogames_parallel.upstream import run_task

        if isinstance(self.agents, WorkerAgents):
            from cogames_parallel.real_agents import RealWorkerAgents

            return run_task(task, RealWorkerAgents(self.agents))
        return run_task(task)

    def close(self) -> None:
        self.agents.close()

    def terminate(self) -> None:
        if isinstance(self.agents, WorkerAgents):
            self.agents.pool.terminate()


class _Runner:
    """Start workers with ``start()`` (or ``with``) before anything else starts threads
    (a progress bar does), so the cheap ``fork`` start method stays safe; ``run()``
    starts and stops them itself when used alone."""

    started = False

    def start(self) -> None:
        self.started = True

    def close(self) -> None:
        self.started = False

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, tasks: Sequence[EvalTask], on_result: OnResult | None = None):
        own = not self.started
        if own:
            self.start()
        try:
            return self._run(tasks, on_result)
        finally:
            if own:
                self.close()


class SerialRunner(_Runner):
    """Episodes one after another in the main process (agents maybe on workers)."""

    def __init__(self, agent_workers: int = 1) -> None:
        self.agent_workers = agent_workers
        self.engine: EpisodeEngine | None = None

    def start(self) -> None:
        self.engine = EpisodeEngine(self.agent_workers)
        self.engine.start()
        super().start()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        super().close()

    def _run(
        self, tasks: Sequence[EvalTask], on_result: OnResult | None = None
    ) -> list[EpisodeResult]:
        results = []
        for task in tasks:
            r = self.engine.run(task)
            results.append(r)
            if on_result:
                on_result(r)
        return results


def _episode_worker_main(conn, agent_workers: int) -> None:
    worker_setup()
    engine = EpisodeEngine(agent_workers)

    me = os.getpid()

    def _term(signum, frame):  # the main process is tearing down: take our agents with us
        if os.getpid() == me:  # not in a freshly forked agent worker that inherited this
            engine.terminate()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, _term)
    try:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                return
            if task is None:
                return
            try:
                conn.send(engine.run(task))
            except (OSError, BrokenPipeError):
                return
    finally:
        engine.close()


class ProcessRunner(_Runner):
    """Episodes on ``workers`` worker processes, each with ``agent_workers`` agent workers.

    Tasks are handed out one at a time to whichever worker is idle (episodes differ in
    length, so dynamic dispatch balances better than fixed chunks). If a worker dies,
    the one episode it was running is reported failed and a fresh worker replaces it.
    """

    def __init__(self, workers: int, agent_workers: int = 1) -> None:
        self.workers = workers
        self.agent_workers = agent_workers
        self.slots: list[dict[str, Any]] = []

    def _start_worker(self) -> dict[str, Any]:
        ctx = mp_context()
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_episode_worker_main, args=(child, self.agent_workers), name="cogames-episode"
        )
        proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "task": None}

    def start(self) -> None:
        self.slots = [self._start_worker() for _ in range(self.workers)]
        super().start()

    def close(self) -> None:
        self.shutdown(self.slots)
        self.slots = []
        super().close()

    def pids(self) -> list[int]:
        return [s["proc"].pid for s in self.slots]

    def _run(
        self, tasks: Sequence[EvalTask], on_result: OnResult | None = None
    ) -> list[EpisodeResult]:
        results: list[EpisodeResult | None] = [None] * len(tasks)
        pos = {t.index: k for k, t in enumerate(tasks)}
        pending = deque(tasks)
        slots = self.slots
        done = 0
        try:
            while done < len(tasks):
                for k, s in enumerate(slots):
                    if s["task"] is None and pending:
                        if not s["proc"].is_alive():  # died while idle: replace it first
                            stop_process(s["proc"], s["conn"], grace=0.1)
                            slots[k] = s = self._start_worker()
                        s["task"] = pending.popleft()
                        s["conn"].send(s["task"])
                busy = [s for s in slots if s["task"] is not None]
                ready = wait([s["conn"] for s in busy] + [s["proc"].sentinel for s in busy])
                for k, s in enumerate(slots):
                    if s["task"] is None:
                        continue
                    result = None
                    if s["conn"] in ready or s["conn"].poll():
                        try:
                            result = s["conn"].recv()
                        except (EOFError, OSError):
                            result = None
                    if result is None and s["proc"].sentinel in ready:
                        s["proc"].join(0.1)
                        result = failed_result(
                            s["task"],
                            f"worker process {exit_description(s['proc'])} during this episode",
                        )
                        stop_process(s["proc"], s["conn"], grace=0.1)
                        slots[k] = s = self._start_worker() | {"task": s["task"]}
                    if result is not None:
                        results[pos[result.index]] = result
                        s["task"] = None
                        done += 1
                        if on_result:
                            on_result(result)
        except BaseException:
            # Ctrl-C or a bug: busy workers must not outlive us
            self.shutdown(slots)
            raise
        return [r for r in results if r is not None]

    @staticmethod
    def shutdown(slots) -> None:
        # Busy workers are SIGTERMed (their handler stops their agent workers); idle
        # ones get a polite stop. Either way every child is reaped before we return.
        for s in slots:
            if s["task"] is not None and s["proc"].is_alive():
                s["proc"].terminate()
        for s in slots:
            stop_process(s["proc"], s["conn"], grace=1.0)
            s["task"] = None


RESULT_TAG = 7177  # MPI tag of the finished results a rank streams to rank 0


class MPIRunner:
    """Each MPI rank runs its contiguous share of the task list with a local runner;
    rank 0 collects every result and returns the full ordered list (others get None).

    Results travel to rank 0 as each episode finishes (a non-blocking send), not in one
    gather at the end, so rank 0 always holds everything finished so far: ``checkpoint``
    (rank 0 only) is called with them whenever new ones arrive, and the CLI keeps
    ``--output`` up to date from it. If a rank dies, ``mpirun`` kills the others, and the
    output file still has every episode that reached rank 0.
    """

    def __init__(self, ctx, local, checkpoint: Callable[[list], None] | None = None) -> None:
        self.ctx = ctx
        self.local = local
        self.checkpoint = checkpoint

    def start(self) -> None:
        self.local.start()

    def close(self) -> None:
        self.local.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(
        self, tasks: Sequence[EvalTask], on_result: OnResult | None = None
    ) -> list[EpisodeResult] | None:
        mine = self.ctx.scatter_work(list(tasks))
        comm = getattr(self.ctx, "comm", None)
        if comm is None or self.ctx.size <= 1:  # one rank: nothing to collect
            local = self._run_local(mine, on_result)
            if self.checkpoint is not None:
                self.checkpoint(local)
            return sorted(local, key=lambda r: r.index)
        if self.ctx.is_root:
            return self._run_root(comm, mine, len(tasks), on_result)
        sends = []

        def send(result):
            sends.append(comm.isend(result, dest=0, tag=RESULT_TAG))
            if on_result:
                on_result(result)

        self._run_local(mine, send)
        from mpi4py import MPI

        MPI.Request.waitall(sends)
        return None

    def _run_local(self, mine, on_result):
        try:
            return self.local.run(mine, on_result)
        except BaseException:
            # a rank that cannot finish must not leave the others waiting for it
            self.ctx.abort(1)
            raise

    def _run_root(self, comm, mine, total: int, on_result) -> list[EpisodeResult]:
        from mpi4py import MPI

        got: dict[int, EpisodeResult] = {}

        def drain() -> None:  # what other ranks finished meanwhile, without waiting
            while comm.iprobe(source=MPI.ANY_SOURCE, tag=RESULT_TAG):
                r = comm.recv(source=MPI.ANY_SOURCE, tag=RESULT_TAG)
                got[r.index] = r

        def mine_done(result):
            got[result.index] = result
            if on_result:
                on_result(result)
            drain()
            if self.checkpoint is not None:
                self.checkpoint(list(got.values()))

        self._run_local(mine, mine_done)
        while len(got) < total:
            before = len(got)
            drain()
            if self.checkpoint is not None:  # also writes a deferred checkpoint once due
                self.checkpoint(list(got.values()) if len(got) > before else [])
            if len(got) == before:
                time.sleep(0.01)
        return sorted(got.values(), key=lambda r: r.index)

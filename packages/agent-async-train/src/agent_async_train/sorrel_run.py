"""Training sorrel's own examples: sorrel's loop, plus parallel collection and a learner beside it.

sorrel calls an episode an "epoch". One sorrel episode, as ``Environment.run_experiment``
runs it (``SorrelExperiment.upstream_episode`` is that loop body, step for step, through
sorrel's own methods)::

    env.reset(); model.start_epoch_action(epoch=e) for each agent
    env.take_turn(e) until experiment.max_turns (agents observe, act and store one by one)
    model.end_epoch_action(epoch=e); model.train_step() once per agent; epsilon_decay

Everything that learns or acts is sorrel's: the world, entities, observation specs, each
agent's own model (iRainbow/IQN here) and its own replay memory.

Execution layers (``cfg.parallel``):

* ``env_workers = K`` (parallel collection): each round plays K episodes at once, one per
  worker process, each on its own copy of the sorrel environment acting with the models'
  weights as of the round's start (sorrel's ``take_turn``, its own observation code). The
  main process then writes every episode, in episode order, into each agent's own
  memory (one slice write per field: the bytes of sorrel's row-by-row ``Buffer.add``) and
  runs sorrel's per-episode ``start_epoch_action`` / ``train_step`` / ``epsilon_decay``. Each episode is seeded from
  ``SeedSequence(seed, spawn_key=(1, episode))`` and starts from a cleared worker memory,
  so the result does not depend on which worker ran it or when (tested: processes ==
  in-process, bit for bit).
* ``async_learning`` with ``env_workers``: the learner (the main process) trains on round
  r while the workers already collect round r+1 with the weights from before round r
  (a policy lag of one round, fixed, so runs stay deterministic).
* ``parallel_actions`` / ``parallel_training`` do not apply: sorrel's agents observe the
  world one after another within a turn (each sees the previous agent's move), and its
  models draw minibatches from the global numpy RNG; both are refused with a clear error.

Seeding: sorrel seeds nothing itself; its examples build each model with
``seed=torch.random.seed()`` (a fresh OS-entropy seed). While sorrel builds the environment
that call returns agent i's seed spawned from the run's ``SeedSequence`` instead (and
seeds torch with it, as ``torch.random.seed`` does), so the initial weights are a function
of the run seed: sorrel's own ``run_experiment`` on an environment built here and our loop
with every layer off start from the same weights and stay identical. Python's ``random``,
numpy's and torch's global RNGs (spawn points, exploration, minibatches, IQN quantiles) are
seeded from the same ``SeedSequence``; a resumed run continues exactly (the checkpoint holds
the models, memories and RNG states).
"""

from __future__ import annotations

import contextlib
import copy
import json
import multiprocessing as mp
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from parallel_core.io import atomic_write
from parallel_core.pools import WorkerError, choose_start_method, make_executor
from parallel_core.progress import progress_bar

from .config import Config, ConfigError, validate
from .errors import CheckpointError, LearnerError
from .games import SORREL_PREFIX
from .games.sorrel_games import build_env, example_config, renderer_class

FORMAT = "agent-async-train/sorrel-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
_INIT, _EPISODES, _EVAL = 0, 1, 2  # spawn_key roots of the run's SeedSequence


def _seed_all(seed: int, *key: int) -> None:
    """Seed the global RNGs sorrel uses (random, numpy, torch) from ``SeedSequence(seed, key)``."""
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(4)
    random.seed(int(state[0]))
    np.random.seed(int(state[1]))
    torch.manual_seed(int(state[2]) << 32 | int(state[3]))


@contextlib.contextmanager
def seeded_model_init(seed: int, *key: int):
    """While sorrel builds models, ``torch.random.seed()`` returns the i-th model's seed from
    ``SeedSequence(seed, spawn_key=(*key, i))`` (and seeds torch with it, as the original
    does) instead of OS entropy. sorrel's code is unchanged; its call is answered by us."""
    original = torch.random.seed
    count = 0

    def deterministic_seed() -> int:
        nonlocal count
        state = np.random.SeedSequence(seed, spawn_key=(*key, count)).generate_state(2)
        count += 1
        value = int(state[0]) << 32 | int(state[1])
        torch.manual_seed(value)
        return value

    torch.random.seed = deterministic_seed
    try:
        yield
    finally:
        torch.random.seed = original


def _rng_state() -> dict:
    return {"random": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _episode_rows(memory, start: int, end: int) -> dict:
    """Rows ``[start, end)`` of a sorrel ``Buffer`` (ring order), as plain arrays."""
    idx = np.arange(start, start + (end - start) % memory.capacity) % memory.capacity
    rows = {
        "states": memory.states[idx].copy(),
        "actions": memory.actions[idx].copy(),
        "rewards": memory.rewards[idx].copy(),
        "dones": memory.dones[idx].copy(),
    }
    rows["extra"] = {k: v[idx].copy() for k, v in memory.extra_data.items()}
    return rows


def _play(env, episode: int, max_turns: int, renderer=None) -> list[int]:
    """sorrel's episode loop (``run_experiment``'s inner part) without training.

    Returns each agent's memory position after ``start_epoch_action`` (whose ``add_empty``
    skips ``n_frames - 1`` slots): the episode's rows are from there to ``memory.idx``.
    """
    env.reset()
    for agent in env.agents:
        env._model_start_epoch_action(agent, episode)
    starts = [agent.model.memory.idx for agent in env.agents]
    while not env.turn >= max_turns:
        if renderer is not None:
            renderer.add_image(env.world)
        env.take_turn(episode)
        if env.world.is_done and env.stop_if_done:
            break
    env.world.is_done = True
    for agent in env.agents:
        env._model_end_epoch_action(agent, episode)
    return starts


# -- collection workers -------------------------------------------------------------------
_WORKER: dict = {}


def _init_collector(example: str, config: dict, seed: int, barrier=None) -> None:
    """Worker initializer: this process's own sorrel environment, built by sorrel.

    Only plain data crosses the process boundary (torch's shared-memory tensor pickling needs
    a large /dev/shm, which containers often lack); weights arrive as numpy arrays.
    """
    saved = _rng_state()  # building draws spawn points and re-seeds torch: keep the caller's RNGs
    _WORKER["env"] = build_env(example, config)
    _WORKER["seed"] = seed
    _WORKER["barrier"] = barrier
    _set_rng_state(saved)


def _worker_ready() -> None:
    """Return once every worker has built its environment (each blocks one worker)."""
    if _WORKER.get("barrier") is not None:
        _WORKER["barrier"].wait(timeout=_RESULT_TIMEOUT_S)


def _bulk_add(memory, rows: dict) -> None:
    """``memory.add`` for every row of an episode, as one slice write per field.

    The same bytes, ``idx`` and ``size`` as sorrel's row-by-row ``Buffer.add`` (a ring:
    positions wrap modulo the capacity); used only where ``add`` is sorrel's own.
    """
    n = len(rows["actions"])
    if n == 0:
        return
    keep = min(n, memory.capacity)  # a longer episode overwrites its own first rows
    idx = (memory.idx + n - keep + np.arange(keep)) % memory.capacity
    memory.states[idx] = rows["states"][n - keep :]
    memory.actions[idx] = rows["actions"][n - keep :]
    memory.rewards[idx] = rows["rewards"][n - keep :]
    memory.dones[idx] = rows["dones"][n - keep :]
    for key, value in rows["extra"].items():
        memory.extra_data[key][idx] = value[n - keep :]
    memory.idx = int((memory.idx + n) % memory.capacity)
    memory.size = min(memory.size + n, memory.capacity)


def collect_episode(episode: int, weights: list[dict] | bytes, epsilons: list[float]) -> dict:
    """Play sorrel episode ``episode`` on this worker's environment copy; return its rows.

    Depends only on (weights, epsilons, episode seed): the memory is cleared first, so the
    stacked frames at the episode start do not depend on what this worker played before.
    ``weights`` may come pickled (one serialisation per round in the main process).
    """
    env, seed = _WORKER["env"], _WORKER["seed"]
    if isinstance(weights, bytes):
        weights = pickle.loads(weights)
    saved = _rng_state()  # in-process collection must not move the learner's RNG streams
    for agent, w, eps in zip(env.agents, weights, epsilons):
        agent.model.load_state_dict({k: torch.from_numpy(v) for k, v in w.items()})
        agent.model.epsilon = eps
        agent.model.memory.clear()
        for v in agent.model.memory.extra_data.values():
            v[...] = 0
    _seed_all(seed, _EPISODES, episode)
    starts = _play(env, episode, int(env.config.experiment.max_turns))
    rows = [_episode_rows(a.model.memory, s, a.model.memory.idx) for a, s in zip(env.agents, starts)]
    _set_rng_state(saved)
    return {"episode": episode, "turns": env.turn, "rows": rows}


class SorrelExperiment:
    """A sorrel example trained by sorrel's loop, with our execution layers (module docstring)."""

    def __init__(self, cfg: Config):
        validate(cfg)
        p = cfg.parallel
        if p.parallel_actions:
            raise ConfigError(
                "--parallel-actions does not apply to sorrel games: sorrel's agents observe and act "
                "one after another within a turn; use parallel.env_workers=N (parallel collection)"
            )
        if p.parallel_training:
            raise ConfigError(
                "--parallel-training does not apply to sorrel games: sorrel's models sample from "
                "the global numpy RNG, so concurrent updates would not be reproducible; use "
                "parallel.env_workers=N and --async-learning"
            )
        if p.async_learning and p.env_workers < 1:
            raise ConfigError(
                "--async-learning on a sorrel game trains beside the collection workers: "
                "set parallel.env_workers to 1 or more"
            )
        self.cfg = cfg
        self.example = cfg.game.name.removeprefix(SORREL_PREFIX)
        self.sorrel_config = example_config(self.example, cfg.game.agents, cfg.game.options)
        self.seed = cfg.run.seed
        _seed_all(self.seed, _INIT)  # populate_environment() draws spawn points already
        with seeded_model_init(self.seed, _INIT, 2):  # each model's weights from the run seed
            self.env = build_env(self.example, self.sorrel_config)
        _seed_all(self.seed, _INIT, 1)  # the models re-seeded torch
        self.agents = self.env.agents
        self.num_agents = len(self.agents)
        self.max_turns = int(self.env.config.experiment.max_turns)
        self.reward_name = f"sorrel {self.example} reward"
        self.epoch = 0
        self.episodes = 0
        self.env_steps = 0  # agent turns played (turns x agents)
        self.history: list[dict] = []
        self._pool = None
        self._pending = None  # async: the round being collected while the learner trains

    # -- setup / teardown ---------------------------------------------------------------
    def start(self, in_process: bool = False) -> SorrelExperiment:
        """Start the collection workers (``in_process``: the same rounds, run in this process)."""
        k = self.cfg.parallel.env_workers
        if k >= 1 and self._pool is None:
            # Each worker builds its own copy of the environment (fork start: sorrel is already
            # imported); make_executor runs the workers at one torch/BLAS thread each and kills
            # them if this process dies. Workers start on demand, so k tasks that meet at a
            # barrier start them all and wait until each has built its environment: the
            # first round's clock does not include building k environments.
            workers = 1 if in_process else k
            barrier = mp.get_context(choose_start_method()).Barrier(workers) if workers > 1 else None
            self._pool = make_executor(
                workers,
                kind="process",
                initializer=_init_collector,
                initargs=(self.example, self.sorrel_config, self.seed, barrier),
            )
            ready = [self._pool.submit(_worker_ready) for _ in range(workers)]
            try:
                for f in ready:
                    f.result(timeout=_RESULT_TIMEOUT_S)
            except BaseException as err:
                self.close(drain=False)
                raise LearnerError(
                    f"the collection workers did not start: {type(err).__name__}: {err}"
                ) from err
        return self

    def close(self, drain: bool = True) -> None:
        self._pending = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            if drain or not hasattr(pool, "terminate"):
                pool.shutdown(wait=True, cancel_futures=not drain)
            else:
                pool.terminate()  # stop workers now: no process is left behind

    # -- sorrel's own loop ----------------------------------------------------------------
    def upstream_episode(self) -> tuple[np.ndarray, float]:
        """One iteration of sorrel's ``run_experiment`` loop; returns (per-agent return, loss)."""
        env, e = self.env, self.episodes
        starts = _play(env, e, self.max_turns)
        returns = np.array(
            [
                _episode_rows(a.model.memory, s, a.model.memory.idx)["rewards"].sum()
                for a, s in zip(self.agents, starts)
            ]
        )
        loss = self._learn_episode()
        self.env_steps += env.turn * self.num_agents
        return returns, loss

    def _learn_episode(self) -> float:
        """sorrel's end of an episode: each agent's train_step, then its epsilon decay."""
        total_loss = 0.0
        for agent in self.agents:
            total_loss += float(self.env._model_train_step(agent))
        for agent in self.agents:
            if hasattr(self.env.config.model, "epsilon_decay"):
                agent.model.epsilon_decay(self.env.config.model.epsilon_decay)
        self.episodes += 1
        return total_loss

    # -- parallel collection ------------------------------------------------------------
    def _submit_round(self, first: int, count: int, weights, epsilon0: list[float]):
        rate = float(self.env.config.model.get("epsilon_decay", 0.0))
        if count > 1:  # serialise the weights once, not once per episode
            weights = pickle.dumps(weights, protocol=pickle.HIGHEST_PROTOCOL)
        futures = []
        for j in range(count):
            eps = [e * (1 - rate) ** j for e in epsilon0]  # sorrel's decay, j episodes on
            futures.append(self._pool.submit(collect_episode, first + j, weights, eps))
        return futures

    def _weights(self) -> list[dict]:
        return [
            {k: v.detach().cpu().numpy().copy() for k, v in a.model.state_dict().items()}
            for a in self.agents
        ]

    def _replay(self, result: dict) -> tuple[np.ndarray, float]:
        """Store a collected episode in each agent's own memory, then sorrel's episode end."""
        from sorrel.buffers import Buffer

        e = self.episodes
        if result["episode"] != e:
            raise RuntimeError(f"episode {result['episode']} arrived out of order (expected {e})")
        returns = []
        for agent, rows in zip(self.agents, result["rows"]):
            self.env._model_start_epoch_action(agent, e)  # add_empty + target sync, as upstream
            mem = agent.model.memory
            if type(mem).add is Buffer.add:  # sorrel's own row write: one slice per field
                _bulk_add(mem, rows)
            else:  # a memory with its own add: row by row, through it
                for t in range(len(rows["actions"])):
                    extra = {k: v[t] for k, v in rows["extra"].items()}
                    mem.add(rows["states"][t], rows["actions"][t], rows["rewards"][t], rows["dones"][t], **extra)
            self.env._model_end_epoch_action(agent, e)
            returns.append(float(rows["rewards"].sum()))
        loss = self._learn_episode()
        self.env_steps += result["turns"] * self.num_agents
        return np.array(returns), loss

    def _collect_round(self, count: int, next_count: int) -> list[dict]:
        """This round's episodes; with async learning, also start the next round now."""
        if self._pending is not None:
            futures, self._pending = self._pending, None
        else:
            futures = self._submit_round(
                self.episodes, count, self._weights(), [a.model.epsilon for a in self.agents]
            )
        if self.cfg.parallel.async_learning and next_count:
            # The next round starts now, with the weights from before this round's training:
            # the learner (this process) trains while the workers collect, a fixed lag of one
            # round. The pipeline never crosses an epoch end, so checkpoints resume exactly.
            rate = float(self.env.config.model.get("epsilon_decay", 0.0))
            eps_next = [a.model.epsilon * (1 - rate) ** count for a in self.agents]
            self._pending = self._submit_round(
                self.episodes + count, next_count, self._weights(), eps_next
            )
        try:
            return [f.result(timeout=_RESULT_TIMEOUT_S) for f in futures]
        except TimeoutError as err:
            raise LearnerError(
                f"a collection worker gave no result within {_RESULT_TIMEOUT_S} s; stopping"
            ) from err
        except (WorkerError, OSError, RuntimeError) as err:
            text = " ".join(str(err).split("\n")[:1])
            raise LearnerError(f"a collection worker failed or died: {text}") from err

    # -- the epoch ------------------------------------------------------------------------
    def run_epoch(self) -> dict:
        """``run.episodes_per_epoch`` sorrel episodes (each with its sorrel training step)."""
        t0 = time.perf_counter()
        steps0 = self.env_steps
        returns, losses = [], []
        n = self.cfg.run.episodes_per_epoch
        k = self.cfg.parallel.env_workers
        if k < 1:
            for _ in range(n):
                r, loss = self.upstream_episode()
                returns.append(r)
                losses.append(loss)
        else:
            rounds = [k] * (n // k) + ([n % k] if n % k else [])
            for i, count in enumerate(rounds):
                next_count = rounds[i + 1] if i + 1 < len(rounds) else 0
                for result in self._collect_round(count, next_count):
                    r, loss = self._replay(result)
                    returns.append(r)
                    losses.append(loss)
        self.epoch += 1
        wall = time.perf_counter() - t0
        mean = np.mean(returns, axis=0)
        row = {
            "epoch": self.epoch,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "updates_per_agent": self.episodes,
            "mean_return": float(mean.mean()),
            "epsilon": float(self.agents[0].model.epsilon),
            "loss": float(np.mean(losses)),
            "wall_s": wall,
            "env_steps_per_s": (self.env_steps - steps0) / wall if wall > 0 else 0.0,
        }
        for i, v in enumerate(mean.tolist()):
            row[f"return_agent{i}"] = v
        self.history.append(row)
        return row

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, episodes: int, random_baseline: bool = True, record: str | None = None) -> dict:
        """Greedy episodes (epsilon 0) on fixed seeds, on a copy: training state is untouched."""
        saved = _rng_state()
        try:
            greedy = self._eval_episodes(episodes, 0.0, record)
            out = {
                "greedy_score": float(greedy.mean()),
                "greedy_per_agent": greedy.mean(axis=0).tolist(),
            }
            if random_baseline:
                out["random_score"] = float(self._eval_episodes(episodes, 1.0).mean())
        finally:
            _set_rng_state(saved)
        return out

    def _eval_episodes(self, episodes: int, epsilon: float, record: str | None = None) -> np.ndarray:
        env = copy.deepcopy(self.env)
        for agent in env.agents:
            agent.model.epsilon = epsilon
        scores = []
        for k in range(episodes):
            _seed_all(self.seed, _EVAL, k)
            renderer = None
            if record is not None and k == 0:
                renderer = renderer_class()(f"sorrel-{self.example}", 1, self.max_turns)
            starts = _play(env, k, self.max_turns, renderer)
            if renderer is not None:
                _save_gif(renderer, record)
            scores.append(
                [
                    _episode_rows(a.model.memory, s, a.model.memory.idx)["rewards"].sum()
                    for a, s in zip(env.agents, starts)
                ]
            )
        return np.array(scores, dtype=np.float64)

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "episodes": self.episodes,
            "env_steps": self.env_steps,
            "history": list(self.history),
            # sorrel's model objects: weights, optimiser, epsilon and replay memory
            "models": [a.model for a in self.agents],
            "rng": _rng_state(),
        }

    def restore(self, state: dict) -> None:
        models = state["models"]
        if len(models) != self.num_agents:
            raise CheckpointError(
                f"checkpoint has {len(models)} agents but the game has {self.num_agents}"
            )
        for agent, model in zip(self.agents, models):
            agent.model = model
        self.epoch = int(state["epoch"])
        self.episodes = int(state["episodes"])
        self.env_steps = int(state["env_steps"])
        self.history = list(state["history"])
        _set_rng_state(state["rng"])


_RESULT_TIMEOUT_S = 600.0  # a worker that neither answers nor dies within this is reported


def _save_gif(renderer, path: str) -> None:
    """sorrel's own animation (``ImageRenderer``), moved atomically to ``path``."""
    import tempfile

    target = Path(path)
    with tempfile.TemporaryDirectory(dir=target.parent or ".") as tmp:
        renderer.save_gif(0, tmp)
        produced = sorted(Path(tmp).glob("*.gif"))
        if not produced:
            raise LearnerError(f"sorrel wrote no animation for {path}")
        produced[0].replace(target)


def save_checkpoint(path: Path, experiment: SorrelExperiment) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(experiment.state(), f)


def load_checkpoint(path: str | Path) -> dict:
    from .checkpoint import read_file

    state = read_file(path)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a sorrel agent-train checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version {state.get('version')}")
    return state


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def train(
    cfg: Config,
    *,
    resume_state: dict | None = None,
    resume_path: str | None = None,
    quiet: bool = False,
    overwrite: bool = False,
) -> dict:
    """Train a sorrel example per ``cfg`` (or continue a checkpoint); returns the summary."""
    from .run import prepare_run_dir, start_run

    torch.set_num_threads(cfg.run.torch_threads)
    run_dir = prepare_run_dir(cfg, resume_path, overwrite)
    experiment = SorrelExperiment(cfg)  # config/game errors surface here, before any write
    if resume_state is not None:
        experiment.restore(resume_state)
    start_epoch, logger, ckpt_path = start_run(cfg, experiment, run_dir)
    p = cfg.parallel
    _say(
        quiet,
        f"agent-train: sorrel:{experiment.example} with {experiment.num_agents} agents "
        f"({type(experiment.agents[0].model).__name__}), epochs {start_epoch}->{cfg.run.epochs}, "
        f"env_workers={p.env_workers} async_learning={p.async_learning} -> {run_dir}",
    )
    t0 = time.perf_counter()
    steps0 = experiment.env_steps
    try:
        with progress_bar(cfg.run.epochs - start_epoch, "training", quiet=quiet) as bar:
            while experiment.epoch < cfg.run.epochs:
                row = experiment.run_epoch()
                last = experiment.epoch == cfg.run.epochs
                if last or experiment.epoch % cfg.run.eval_every == 0:
                    ev = experiment.evaluate(cfg.run.eval_episodes)
                    row.update(eval_greedy=ev["greedy_score"], eval_random=ev["random_score"])
                logger.log(experiment.history)
                if last or experiment.epoch % cfg.run.checkpoint_every == 0:
                    save_checkpoint(ckpt_path, experiment)
                _say(
                    quiet,
                    f"epoch {row['epoch']:>3}  episodes {row['episodes']:>5}  return "
                    f"{row['mean_return']:7.2f}  eps {row['epsilon']:.3f}  "
                    f"{row['env_steps_per_s']:7.0f} agent-steps/s"
                    + (f"  greedy {row['eval_greedy']:.2f} (random {row['eval_random']:.2f})"
                       if "eval_greedy" in row else ""),
                )
                bar.advance(1)
    except BaseException:
        experiment.close(drain=False)
        raise
    finally:
        logger.close()
    experiment.close()
    wall = time.perf_counter() - t0
    final = experiment.history[-1]
    summary = {
        "game": cfg.game.name,
        "agents": experiment.num_agents,
        "model": type(experiment.agents[0].model).__name__,
        "reward_name": experiment.reward_name,
        "epochs": experiment.epoch,
        "episodes": experiment.episodes,
        "env_steps": experiment.env_steps,
        "updates_per_agent": experiment.episodes,
        "greedy_score": final["eval_greedy"],
        "random_score": final["eval_random"],
        "final_train_return": final["mean_return"],
        "wall_s": wall,
        "env_steps_per_s": (experiment.env_steps - steps0) / wall if wall > 0 else 0.0,
        "parallel": cfg.to_dict()["parallel"],
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt_path),
        "metrics_csv": str(logger.csv_path),
    }
    with atomic_write(run_dir / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def evaluate_checkpoint(
    path: str, episodes: int, execution: str | None = None, state: dict | None = None,
    record: str | None = None,
) -> dict:
    """Greedy episodes of a sorrel checkpoint, next to random play on the same seeds."""
    from .checkpoint import config_of

    state = load_checkpoint(path) if state is None else state
    cfg = config_of(state)
    cfg.parallel.env_workers = 0
    cfg.parallel.async_learning = False
    experiment = SorrelExperiment(cfg)
    experiment.restore(state)
    result = experiment.evaluate(episodes, record=record)
    return {
        "checkpoint": str(path),
        "game": cfg.game.name,
        "reward_name": experiment.reward_name,
        "epoch": experiment.epoch,
        "env_steps": experiment.env_steps,
        "episodes": episodes,
        **result,
        **({"recording": record} if record else {}),
    }

"""The vectorised environment loop: many environments on many devices, one batched policy.

Data flow per epoch::

    envs on their devices (each on its own persistent CUDA stream) train one epoch
      -> observations (CPU numpy, one row per env) -> one tensor on the policy device
      -> one batched policy forward -> actions back to each env -> rewards -> buffer

Environments are grouped by device. Inside a group, the epoch interleaves the envs batch
by batch, so each env's kernels queue on its own stream and the GPU overlaps them; with
several devices each group runs in its own thread (torch releases the GIL in kernels),
so devices work at the same time. On CPU the stream context is a null context and the
same path runs (``--devices cpu cpu`` exercises all of it).

Every environment's seed comes from ``SeedSequence(seed, spawn_key=(batch,))`` spawned per
env index, so results do not depend on the device mapping, the thread interleaving or
how many devices there are.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from parallel_core.budget import available_cores
from parallel_core.devices import format_assignment, map_to_devices, validate_devices
from parallel_core.pools import make_executor

from ..config import TrainConfig
from ..kasmina.host import SLOT_NAMES
from ..tamiyo.heuristic import HeuristicController
from ..telemetry import TelemetrySink
from ..tolaria.env import Action, MorphoEnv, effective_amp
from ..tolaria.tasks import DeviceData, TaskData
from .actions import action_masks, decode_action
from .buffer import RolloutBuffer
from .features import OBS_DIM, build_observation
from .ppo import PPOAgent
from .rewards import compute_reward


def batch_seeds(seed: int, batch: int, first_episode: int, n_envs: int) -> tuple[list[int], int, int]:
    """(env seeds, policy-sampling seed, update seed) for one batch, from SeedSequences.

    An env's seed belongs to its *episode* (spawn key ``(2, episode)``), not to its place
    in a batch, so episode k trains the same host whatever ``n_envs`` or devices a run (or
    a resumed run) uses; the policy's sampling and update seeds belong to the batch.
    """
    ints = lambda ss: int(ss.generate_state(1, dtype=np.uint32)[0])  # noqa: E731
    envs = [
        ints(np.random.SeedSequence(seed, spawn_key=(2, first_episode + k))) for k in range(n_envs)
    ]
    sample, update = np.random.SeedSequence(seed, spawn_key=(3, batch)).spawn(2)
    return envs, ints(sample), ints(update)


def policy_init_seed(seed: int) -> int:
    """The policy network's initialisation seed: its own SeedSequence branch (spawn key (1, 0))."""
    return int(np.random.SeedSequence(seed, spawn_key=(1, 0)).generate_state(1, dtype=np.uint32)[0])


def device_labels(devices: list[str]) -> list[str]:
    """Unique labels for device positions: ``["cpu", "cpu"]`` -> ``["cpu#0", "cpu#1"]``."""
    if len(set(devices)) == len(devices):
        return list(devices)
    return [f"{d}#{i}" for i, d in enumerate(devices)]


class PPOController:
    """Adapts :class:`PPOAgent` to the env loop: one action per env per epoch, stored for the update."""

    name = "ppo"

    def __init__(self, agent: PPOAgent, max_epochs: int, learn: bool = True, greedy: bool = False):
        self.agent = agent
        self.learn, self.greedy = learn, greedy
        self.steps = (
            max_epochs - 1
        )  # no action after the last epoch: its effect could not be observed
        self.buffer: RolloutBuffer | None = None
        self._raw: list[np.ndarray] = []

    def begin_batch(self, n_envs: int, seed: int) -> None:
        self.agent.begin_batch(n_envs, seed)
        self.buffer = RolloutBuffer(self.steps, n_envs, self.agent.obs_dim)
        self._raw = []

    def act(self, obs: np.ndarray, masks: list[dict]) -> list[list[Action]]:
        stacked = {k: np.stack([m[k] for m in masks]) for k in masks[0]}
        norm, actions, slot_mask, logp, values = self.agent.act(obs, stacked, greedy=self.greedy)
        head_masks = {
            "op": stacked["op"],
            "slot": slot_mask,
            "blueprint": stacked["blueprint"],
            "blend": stacked["blend"],
        }
        self.buffer.add(norm, actions, head_masks, logp, values)
        self._raw.append(obs)
        return [[decode_action(*a)] for a in actions]

    def record_rewards(self, step: int, rewards: np.ndarray) -> None:
        self.buffer.set_rewards(step, rewards)

    def end_batch(self, final_obs: np.ndarray, update_seed: int, progress: float = 0.0) -> dict | None:
        if not self.learn:
            return None
        self.buffer.last_values[:] = self.agent.value(final_obs)
        raw = np.concatenate(self._raw + [final_obs])
        return self.agent.update(self.buffer, raw, update_seed, progress)


class FixedAdapter:
    """The fixed host: never grows a seed (the baseline growth must beat)."""

    name = "fixed"

    def begin_batch(self, n_envs: int, seed: int) -> None:
        self.n = n_envs

    def act(self, obs: np.ndarray, masks: list[dict]) -> list[list[Action]]:
        return [[] for _ in range(len(obs))]

    def record_rewards(self, step: int, rewards: np.ndarray) -> None:
        pass

    def end_batch(self, final_obs: np.ndarray, update_seed: int, progress: float = 0.0) -> None:
        return None


class HeuristicAdapter:
    name = "heuristic"

    def __init__(self, heuristic: HeuristicController, envs: list[MorphoEnv]):
        self.heuristic = heuristic
        self.envs = envs

    def begin_batch(self, n_envs: int, seed: int) -> None:
        self.heuristic.begin_batch(n_envs, seed)

    def act(self, obs: np.ndarray, masks: list[dict]) -> list[list[Action]]:
        return [self.heuristic.decide(k, self.envs[k]) for k in range(len(obs))]

    def record_rewards(self, step: int, rewards: np.ndarray) -> None:
        pass

    def end_batch(self, final_obs: np.ndarray, update_seed: int, progress: float = 0.0) -> None:
        return None


def _train_group_epoch(envs: list[MorphoEnv]) -> list[dict]:
    """One epoch for every env of one device: training interleaved batch by batch across
    their streams, then every env's evaluation queued before the group waits (once per env,
    after all are queued, so the evaluations overlap on their streams)."""
    for env in envs:
        env.begin_epoch()
    for i in range(envs[0].n_batches):
        for env in envs:
            env.train_batch(i)
    for env in envs:
        env.queue_eval()
    return [env.finish_epoch() for env in envs]


class VectorizedTrainer:
    """Runs batches of ``n_envs`` environments under a controller (PPO or heuristic)."""

    def __init__(
        self,
        cfg: TrainConfig,
        task: TaskData,
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    ):
        self.cfg = cfg
        self.log = log
        self.devices = validate_devices(cfg.devices)  # fail fast, before any data moves
        n_envs = min(cfg.n_envs, cfg.episodes)
        # Map onto device *positions*, so `--devices cpu cpu` gives two groups (two threads).
        labels = device_labels(self.devices)
        self.env_groups = map_to_devices(n_envs, labels, cfg.device_strategy)
        self.env_devices = [self.devices[labels.index(g)] for g in self.env_groups]
        self.policy_device = validate_devices([cfg.policy_device or self.devices[0]])[0]
        if not cfg.quiet:  # a status line; warnings below are shown even with --quiet
            log(
                f"esper: {n_envs} env(s) -> devices: {format_assignment(self.env_groups)}"
                + (f"; policy on {self.policy_device}" if cfg.mode == "ppo" else "")
            )
        cpu_envs = [d for d in self.env_devices if effective_amp(cfg.amp, d) != cfg.amp]
        if cfg.amp != "off" and cpu_envs:
            log(
                f"esper: warning: --amp {cfg.amp} is CUDA-only; the {len(cpu_envs)} env(s) on cpu train in float32 (no-op)"
            )
        #: the AMP mode each device actually runs (AMP is CUDA-only: CPU runs float32)
        self.amp_effective = {d: effective_amp(cfg.amp, d) for d in dict.fromkeys(self.env_devices)}
        self.groups: dict[str, list[int]] = {}
        for i, g in enumerate(self.env_groups):
            self.groups.setdefault(g, []).append(i)
        # Small convolutions scale poorly across intra-op threads and thrash when the cores
        # are shared, so each CPU device group gets one torch thread by default; CPU
        # parallelism comes from several groups (--devices cpu cpu) working side by side.
        n_cpu_groups = sum(1 for g in self.groups if g.startswith("cpu"))
        self.cpu_threads = cfg.cpu_threads or 1
        if n_cpu_groups and self.cpu_threads * n_cpu_groups > available_cores():
            log(
                f"esper: warning: {n_cpu_groups} cpu device group(s) x {self.cpu_threads} thread(s) "
                f"exceed the {available_cores()} available core(s); expect contention"
            )
        torch.set_num_threads(self.cpu_threads)
        self.task = task
        data = DeviceData(task)
        self.envs = [
            MorphoEnv(
                i,
                d,
                data.on(d),
                task.n_classes,
                tuple(s for s in SLOT_NAMES if s in cfg.slots),
                cfg.env_config(),
                cfg.amp,
                cfg.gates,
            )
            for i, d in enumerate(self.env_devices)
        ]
        self.agent = (
            PPOAgent(OBS_DIM, self.policy_device, cfg.ppo, seed=policy_init_seed(cfg.seed))
            if cfg.mode == "ppo"
            else None
        )

    # ------------------------------------------------------------------ loop
    def run_epoch(self, envs: list[MorphoEnv], executor) -> list[dict]:
        active = {id(e) for e in envs}
        groups = [
            [self.envs[i] for i in idx if id(self.envs[i]) in active]
            for idx in self.groups.values()
        ]
        groups = [g for g in groups if g]
        results: dict[int, dict] = {}
        for group, out in zip(groups, executor.map(_train_group_epoch, groups)):
            for env, rec in zip(group, out):
                results[env.index] = rec
        return [results[e.index] for e in envs]

    def run_batch(
        self,
        batch: int,
        n: int,
        sink: TelemetrySink,
        on_epoch: Callable[[], None] = lambda: None,
        first_episode: int | None = None,
        learn: bool = True,
        greedy: bool = False,
    ) -> dict:
        """Run episodes ``first_episode .. first_episode + n - 1`` (default ``batch * n_envs``)
        as one batch; with PPO, update the policy afterwards unless ``learn`` is False."""
        cfg = self.cfg
        envs = self.envs[:n]
        first = batch * cfg.n_envs if first_episode is None else first_episode
        env_seeds, policy_seed, update_seed = batch_seeds(cfg.seed, batch, first, n)
        for env, s in zip(envs, env_seeds):
            env.reset(s)
        if self.agent is not None:
            controller = PPOController(self.agent, cfg.max_epochs, learn=learn, greedy=greedy)
        elif cfg.mode == "fixed":
            controller = FixedAdapter()
        else:
            controller = HeuristicAdapter(HeuristicController(cfg.heuristic, cfg.max_seeds, cfg.blueprints), envs)
        controller.begin_batch(n, policy_seed)
        returns = np.zeros(n)
        event_counts: dict[str, int] = {}
        prev_gap = np.zeros(n)
        skipped = 0
        n_groups = len({self.env_groups[e.index] for e in envs})
        t0 = time.perf_counter()
        with make_executor(n_groups, kind="thread") as executor:
            for epoch in range(1, cfg.max_epochs + 1):
                epoch_records = self.run_epoch(envs, executor)
                rewards, parts = np.zeros(n), [None] * n
                if epoch > 1:
                    rewards, parts = self._rewards(envs, prev_gap)
                    returns += rewards
                    controller.record_rewards(epoch - 2, rewards.astype(np.float32))
                obs = np.stack(
                    [
                        build_observation(e.signals, dict(e.model.slots), e.model.enabled_slots)
                        for e in envs
                    ]
                )
                actions: list[list[Action]] = [[] for _ in envs]
                if epoch < cfg.max_epochs:
                    masks = [
                        action_masks(
                            dict(e.model.slots), e.model.enabled_slots, cfg.max_seeds, cfg.blueprints
                        )
                        for e in envs
                    ]
                    actions = controller.act(obs, masks)
                for k, env in enumerate(envs):
                    events = list(epoch_records[k]["events"])
                    skipped += epoch_records[k]["skipped_steps"]
                    for action in actions[k]:
                        events.extend(env.apply(action))
                    # the gap of the state the action is chosen in (a first germination
                    # forks the shadow from this very state, so the gap stays 0 there)
                    prev_gap[k] = env.added_accuracy
                    self._emit_epoch(
                        sink,
                        batch,
                        first + k,
                        env,
                        epoch,
                        actions[k],
                        rewards[k] if epoch > 1 else None,
                        parts[k],
                        events,
                        epoch_records[k]["skipped_steps"],
                    )
                    for ev in events:
                        event_counts[ev["event"]] = event_counts.get(ev["event"], 0) + 1
                on_epoch()
            # the fraction of the run's episodes done before this batch (annealing)
            ppo_stats = controller.end_batch(obs, update_seed, first / cfg.episodes)
        wall = time.perf_counter() - t0
        stage_counts: dict[str, int] = {}
        for env in envs:
            for stage, c in env.stage_counts().items():
                stage_counts[stage] = stage_counts.get(stage, 0) + c
        final_acc = [float(e.signals.val_acc) for e in envs]
        return sink.write(
            "batch",
            batch=batch,
            n_envs=n,
            episodes=[first + k for k in range(n)],
            returns=[float(r) for r in returns],
            final_val_acc=final_acc,
            added_acc=[float(e.added_accuracy) for e in envs],
            seed_params=[int(e.model.seed_param_count()) for e in envs],
            mean_return=float(np.mean(returns)),
            mean_final_val_acc=float(np.mean(final_acc)),
            stage_counts=stage_counts,
            events=event_counts,
            skipped_steps=int(skipped),
            env_epochs=n * cfg.max_epochs,
            wall_s=wall,
            env_epochs_per_s=n * cfg.max_epochs / wall,
            ppo=ppo_stats,
        )

    def _rewards(self, envs, prev_gap) -> tuple[np.ndarray, list[dict]]:
        """The reward of each env's previous action, now that its next epoch has been seen."""
        rewards, parts = np.zeros(len(envs)), []
        for k, env in enumerate(envs):
            rewards[k], p = compute_reward(
                prev_gap[k],
                env.added_accuracy,
                env.model.seed_param_count(),
                env.signals.host_params,
                self.cfg.reward,
            )
            parts.append(p)
        return rewards, parts

    def _emit_epoch(
        self, sink, batch, episode, env: MorphoEnv, epoch, actions, reward, parts, events, skipped
    ) -> None:
        where = {
            "batch": batch,
            "env": env.index,
            "episode": episode,
            "device": env.device,
            "epoch": epoch,
        }
        sig = env.signals
        sink.write(
            "epoch",
            **where,
            train_loss=sig.train_loss,
            val_loss=sig.val_loss,
            train_acc=sig.train_acc,
            val_acc=sig.val_acc,
            shadow_acc=env.shadow_acc,
            added_acc=env.added_accuracy,
            plateau_epochs=sig.plateau_epochs,
            host_params=sig.host_params,
            seed_params=env.model.seed_param_count(),
            skipped_steps=int(skipped),
            actions=[
                {"op": a.op, "slot": a.slot, "blueprint": a.blueprint, "blend": a.blend}
                for a in actions
            ],
            reward=None if reward is None else float(reward),
            reward_parts=parts,
        )
        for name in SLOT_NAMES:
            slot = env.model.slots[name]
            st, tel = slot.state, slot.state.telemetry
            sink.write(
                "slot",
                **where,
                slot=name,
                enabled=name in env.model.enabled_slots,
                stage=st.stage.name,
                blueprint=st.blueprint,
                blend=st.blend,
                alpha=float(st.alpha),
                epochs_in_stage=st.epochs_in_stage,
                progress=float(slot.progress()),
                grad_norm=float(tel.grad_norm),
                grad_health=float(tel.grad_health),
                vanishing=bool(tel.vanishing),
                exploding=bool(tel.exploding),
                accuracy=float(tel.accuracy),
                accuracy_delta=float(tel.accuracy_delta),
                contribution=float(tel.contribution),
            )
        for ev in events:
            sink.write(
                "lifecycle",
                **where | {"epoch": ev["epoch"]},
                **{k: v for k, v in ev.items() if k != "epoch"} | {"reason": ev.get("reason")},
            )

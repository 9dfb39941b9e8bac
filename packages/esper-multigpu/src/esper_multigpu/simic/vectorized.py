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
from ..kasmina.slot import SeedStage
from ..tamiyo.heuristic import HeuristicController
from ..telemetry import TelemetrySink
from ..tolaria.env import Action, MorphoEnv, effective_amp
from ..tolaria.tasks import DeviceData, TaskData
from .actions import action_masks, decode_action
from .buffer import RolloutBuffer
from .features import OBS_DIM, build_observation
from .ppo import PPOAgent
from .rewards import compute_reward


def batch_seeds(seed: int, batch: int, n_envs: int) -> tuple[list[int], int, int]:
    """(env seeds, policy-sampling seed, update seed) for one batch, from a SeedSequence."""
    children = np.random.SeedSequence(seed, spawn_key=(batch,)).spawn(n_envs + 2)
    ints = [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]
    return ints[:n_envs], ints[n_envs], ints[n_envs + 1]


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

    def __init__(self, agent: PPOAgent, max_epochs: int):
        self.agent = agent
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
        norm, actions, slot_mask, logp, values = self.agent.act(obs, stacked)
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

    def end_batch(self, final_obs: np.ndarray, update_seed: int) -> dict:
        self.buffer.last_values[:] = self.agent.value(final_obs)
        raw = np.concatenate(self._raw + [final_obs])
        return self.agent.update(self.buffer, raw, update_seed)


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

    def end_batch(self, final_obs: np.ndarray, update_seed: int) -> None:
        return None


def _train_group_epoch(envs: list[MorphoEnv]) -> list[dict]:
    """One epoch for every env of one device, interleaved batch by batch across their streams."""
    for env in envs:
        env.begin_epoch()
    for i in range(envs[0].n_batches):
        for env in envs:
            env.train_batch(i)
    return [env.end_epoch() for env in envs]


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
        log(
            f"esper: {n_envs} env(s) -> devices: {format_assignment(self.env_groups)}"
            + (f"; policy on {self.policy_device}" if cfg.mode == "ppo" else "")
        )
        cpu_envs = [d for d in self.env_devices if effective_amp(cfg.amp, d) != cfg.amp]
        if cfg.amp != "off" and cpu_envs:
            log(
                f"esper: warning: --amp {cfg.amp} is CUDA-only; the {len(cpu_envs)} env(s) on cpu train in float32 (no-op)"
            )
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
        self, batch: int, n: int, sink: TelemetrySink, on_epoch: Callable[[], None] = lambda: None
    ) -> dict:
        cfg = self.cfg
        envs = self.envs[:n]
        env_seeds, policy_seed, update_seed = batch_seeds(cfg.seed, batch, n)
        for env, s in zip(envs, env_seeds):
            env.reset(s)
        controller = (
            PPOController(self.agent, cfg.max_epochs)
            if self.agent is not None
            else HeuristicAdapter(HeuristicController(cfg.heuristic), envs)
        )
        controller.begin_batch(n, policy_seed)
        returns = np.zeros(n)
        event_counts: dict[str, int] = {}
        prev_acc = np.zeros(n)
        prev_phi = np.zeros(n)
        fossilized = np.zeros(n)
        n_groups = len({self.env_groups[e.index] for e in envs})
        t0 = time.perf_counter()
        with make_executor(n_groups, kind="thread") as executor:
            for epoch in range(1, cfg.max_epochs + 1):
                epoch_records = self.run_epoch(envs, executor)
                rewards, parts = np.zeros(n), [None] * n
                if epoch > 1:
                    rewards, parts = self._rewards(envs, prev_acc, prev_phi, fossilized)
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
                    masks = [action_masks(dict(e.model.slots), e.model.enabled_slots) for e in envs]
                    actions = controller.act(obs, masks)
                fossilized[:] = 0.0
                for k, env in enumerate(envs):
                    # Phi of the state the action is chosen in (before it culls or fossilises)
                    prev_phi[k] = self._on_trial(env)
                    events = list(epoch_records[k]["events"])
                    for action in actions[k]:
                        new = env.apply(action)
                        events.extend(new)
                        for ev in new:
                            if ev["event"] == "fossilized":
                                fossilized[k] += ev["contribution"]
                    self._emit_epoch(
                        sink,
                        batch,
                        env,
                        epoch,
                        actions[k],
                        rewards[k] if epoch > 1 else None,
                        parts[k],
                        events,
                    )
                    for ev in events:
                        event_counts[ev["event"]] = event_counts.get(ev["event"], 0) + 1
                    prev_acc[k] = env.signals.val_acc
                on_epoch()
            ppo_stats = controller.end_batch(obs, update_seed)
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
            returns=[float(r) for r in returns],
            final_val_acc=final_acc,
            mean_return=float(np.mean(returns)),
            mean_final_val_acc=float(np.mean(final_acc)),
            stage_counts=stage_counts,
            events=event_counts,
            env_epochs=n * cfg.max_epochs,
            wall_s=wall,
            env_epochs_per_s=n * cfg.max_epochs / wall,
            ppo=ppo_stats,
        )

    @staticmethod
    def _on_trial(env: MorphoEnv) -> float:
        """Phi: the summed counterfactual contribution of the env's seeds on trial."""
        return float(
            sum(
                s.state.telemetry.contribution
                for s in env.model.slots.values()
                if s.stage in (SeedStage.BLENDING, SeedStage.PROBATIONARY)
            )
        )

    def _rewards(self, envs, prev_acc, prev_phi, fossilized) -> tuple[np.ndarray, list[dict]]:
        """The reward of each env's previous action, now that its next epoch has been seen."""
        rewards, parts = np.zeros(len(envs)), []
        for k, env in enumerate(envs):
            rewards[k], p = compute_reward(
                prev_acc[k],
                env.signals.val_acc,
                prev_phi[k],
                self._on_trial(env),
                env.signals.seed_params,
                env.signals.host_params,
                fossilized[k],
                self.cfg.reward,
            )
            parts.append(p)
        return rewards, parts

    def _emit_epoch(
        self, sink, batch, env: MorphoEnv, epoch, actions, reward, parts, events
    ) -> None:
        where = {
            "batch": batch,
            "env": env.index,
            "episode": batch * self.cfg.n_envs + env.index,
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
            plateau_epochs=sig.plateau_epochs,
            host_params=sig.host_params,
            seed_params=env.model.seed_param_count(),
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

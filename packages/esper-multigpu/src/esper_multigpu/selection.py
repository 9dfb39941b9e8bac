"""Which PPO policy a run keeps, and evaluating a policy with no updates.

PPO's last policy is not its best: one batch of sampled episodes can pull it onto a
harmful blueprint, and what the *greedy* policy does can differ completely from what the
sampling policy earned in training (docs/esper-multigpu.md, "Keeping the policy by
validation"). :class:`PolicySelector` keeps, besides the last policy in the checkpoint,

* ``val``: after every ``val_every`` updates and after the last one, the current policy
  runs ``val_episodes`` **validation hosts** of the training root seed (episodes from
  :data:`VAL_FIRST_EPISODE`, which training never reaches), acting as it will be
  evaluated (``val_policy``, greedy by default); the best mean return is kept
  (:func:`choose_validated`);
* ``best``: the policy that earned the best mean training return of a batch;
* ``last``: the last policy.

:func:`evaluate` runs a controller on some episodes of a root seed without learning;
held-out hosts come from another root seed, :func:`held_out_seed` (training seed +
:data:`HELD_OUT_OFFSET`). ``esper eval`` and ``tools/bench_esper.py`` both use it.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable

from .config import TrainConfig

#: the validation hosts of a training run: these episodes of its own root seed (spawn key
#: (2, VAL_FIRST_EPISODE + i)); training never reaches them, and held-out hosts come from
#: another root seed
VAL_FIRST_EPISODE = 1_000_000
#: held-out hosts: the root seed ``training seed + HELD_OUT_OFFSET`` (the benchmark's)
HELD_OUT_OFFSET = 10_000


def held_out_seed(train_seed: int) -> int:
    return train_seed + HELD_OUT_OFFSET


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a normal 95% interval of the mean (nan for one value)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, float("nan")
    return m, 1.96 * statistics.stdev(values) / math.sqrt(len(values))


def episode_stats(batches: list[dict]) -> dict:
    """Held-out statistics of the episodes of ``batches`` (run summary batch records)."""
    acc = [a for b in batches for a in b["final_val_acc"]]
    params = [p for b in batches for p in b["seed_params"]]
    rets = [r for b in batches for r in b["returns"]]
    added = [a for b in batches for a in b["added_acc"]]
    m, ci = mean_ci95(acc)
    return {
        "episodes": len(acc),
        "val_acc_mean": m,
        "val_acc_ci95": ci,
        "added_params_mean": statistics.fmean(params),
        "return_mean": statistics.fmean(rets),
        "added_acc_mean": statistics.fmean(added),
        "val_acc": acc,
        "added_params": params,
        "returns": rets,
    }


def evaluate(
    cfg: TrainConfig,
    agent_state: dict | None = None,
    greedy: bool = True,
    first_episode: int = 0,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """Episodes ``first_episode`` .. ``+ cfg.episodes - 1`` of root seed ``cfg.seed``, run
    by ``cfg.mode``'s controller (PPO from ``agent_state``) with no updates; PPO acts
    greedily, or samples (seeded by the root seed) with ``greedy=False``. Returns
    :func:`episode_stats` and ``host_params``."""
    from .train import run_training

    summary, _ = run_training(
        cfg, log=log, agent_state=agent_state, learn=False, greedy=greedy, first_episode=first_episode
    )
    return {**episode_stats(summary["batches"]), "host_params": summary["host_params"]}


def choose_validated(candidates: list[dict]) -> dict:
    """The policy ``--keep-policy val`` keeps: the best mean validation return (what the
    reward pays: accuracy added over the paired fixed host, minus rent); ties (to 1e-6) go
    to fewer added parameters, then to the later batch (the more trained policy)."""
    if not candidates:
        raise ValueError("no validated policy to choose from")
    return max(candidates, key=lambda c: (round(c["return"], 6), -c["added_params"], c["batch"]))


def validation_config(cfg: TrainConfig) -> TrainConfig:
    """The training run's settings for its validation runs: ``val_episodes`` envs in one
    batch on the same devices, no files, no output."""
    import dataclasses

    return dataclasses.replace(
        cfg, n_envs=cfg.val_episodes, episodes=cfg.val_episodes, telemetry_dir=None, tensorboard=False,
        save=None, resume=None, keep_policy="last", kept_policy=None, quiet=True,
    )  # fmt: skip


class PolicySelector:
    """Keeps the policy ``cfg.keep_policy`` asks for while a run trains.

    ``after_batch(record, trainer, sink)`` runs after each batch's update (before the
    checkpoint is written); ``state_dict()`` goes into the checkpoint, so a resumed run
    continues the choice among the candidates seen before (when its rule and validation
    settings are the checkpoint's). ``kept`` holds the kept policy (``batch`` = the
    number of updates it had, its scores, ``state`` = the agent's state).
    """

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] = lambda s: None):
        self.cfg = cfg
        self.rule = cfg.keep_policy
        self.path = cfg.kept_policy_path()
        self.log = log
        self.scores: list[dict] = []  # validation scores (no states)
        self.kept: dict | None = None
        self.acting: dict | None = None  # ``best``: the policy that acts in the next batch
        self.cost = {"wall_s": 0.0, "cpu_s": 0.0}

    # ------------------------------------------------------------ checkpoint
    def _settings(self) -> dict:
        return {"rule": self.rule, "val_episodes": self.cfg.val_episodes, "val_policy": self.cfg.val_policy}

    def state_dict(self) -> dict:
        kept = None if self.rule == "last" else self.kept  # the checkpoint holds the last policy itself
        return {**self._settings(), "scores": self.scores, "kept": kept, "cost": dict(self.cost)}

    def resume(self, state: dict | None, trainer) -> None:
        """Continue from a checkpoint's selection (None: a fresh run or an older checkpoint)."""
        if self.rule == "best" and trainer.cfg.resume:
            # the resumed policy acts in the next batch: a candidate of the best-return rule
            self.acting = copy.deepcopy(trainer.agent.state_dict())
        if state is None:
            return
        if {k: state.get(k) for k in self._settings()} != self._settings():
            self.log(
                f"esper: the checkpoint's kept-policy candidates were chosen by {state.get('rule')} "
                f"({state.get('val_episodes')} {state.get('val_policy')} validation episodes); this run chooses among its own"
            )
            return
        self.scores = list(state["scores"])
        self.kept = state["kept"]
        self.cost = dict(state["cost"])

    # ------------------------------------------------------------ per batch
    def after_batch(self, record: dict, trainer, sink) -> None:
        acts_in = record["batch"] + 1  # the policy after this batch's update acts in the next one
        last = record["episodes"][-1] + 1 >= self.cfg.episodes
        changed = False
        if self.rule == "last":
            self.kept = {"batch": acts_in, "return": None, "val_acc": None, "added_params": None,
                         "state": trainer.agent.state_dict()}  # fmt: skip
            changed = True
        elif self.rule == "best":
            # a batch's return was earned by the policy before its update (the first
            # batch's by the untrained policy, which is not a candidate)
            if self.acting is not None and (self.kept is None or record["mean_return"] > self.kept["return"]):
                self.kept = {"batch": record["batch"], "return": record["mean_return"], "val_acc": None,
                             "added_params": None, "state": self.acting}  # fmt: skip
                changed = True
            self.acting = copy.deepcopy(trainer.agent.state_dict())
        elif acts_in % self.cfg.val_every == 0 or last:
            changed = self._validate(acts_in, trainer, sink)
        if changed and self.path:
            self.save()

    def _validate(self, acts_in: int, trainer, sink) -> bool:
        w0, c0 = time.perf_counter(), time.process_time()
        state = copy.deepcopy(trainer.agent.state_dict())
        cfg = validation_config(trainer.cfg)
        r = evaluate(cfg, state, greedy=cfg.val_policy == "greedy", first_episode=VAL_FIRST_EPISODE)
        score = {"batch": acts_in, "return": r["return_mean"], "val_acc": r["val_acc_mean"],
                 "added_params": r["added_params_mean"]}  # fmt: skip
        self.scores.append(score)
        best = choose_validated([c for c in (self.kept, score) if c is not None])
        changed = best is score
        if changed:
            self.kept = {**score, "state": state}
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        self.cost["wall_s"] += wall
        self.cost["cpu_s"] += cpu
        sink.write(
            "validation", batch=acts_in, first_episode=VAL_FIRST_EPISODE, episodes=cfg.episodes,
            policy=cfg.val_policy, mean_return=score["return"], mean_val_acc=score["val_acc"],
            added_params=score["added_params"], returns=r["returns"], val_acc=r["val_acc"],
            kept_batch=self.kept["batch"], wall_s=wall,
        )  # fmt: skip
        self.log(
            f"esper: validation of the policy after {acts_in} update(s) ({cfg.episodes} hosts, {cfg.val_policy}): "
            f"return {score['return']:+.4f}, val_acc {score['val_acc']:.4f}, params {score['added_params']:.0f}"
            + (" (kept)" if changed else f" (kept: after {self.kept['batch']})")
        )
        return changed

    # ------------------------------------------------------------ the end
    def finish(self, trainer, sink, batches_run: int) -> dict:
        """The kept policy (the last one where the rule found no candidate), written to its
        file; its description for the summary and the telemetry."""
        if self.kept is None and trainer.agent is not None and batches_run:
            self.kept = {"batch": None, "return": None, "val_acc": None, "added_params": None,
                         "state": trainer.agent.state_dict(), "fallback": "last"}  # fmt: skip
            if self.path:
                self.save()
        info = self.describe()
        sink.write("kept", **{k: info[k] for k in ("rule", "batch", "return", "val_acc", "added_params", "file")})
        return info

    def describe(self) -> dict:
        kept = self.kept or {}
        info = {
            "rule": self.rule,
            "batch": kept.get("batch"),
            "return": kept.get("return"),
            "val_acc": kept.get("val_acc"),
            "added_params": kept.get("added_params"),
            "file": self.path,
        }
        if kept.get("fallback"):
            info["note"] = "no candidate: the last policy"
        if self.rule == "val":
            info["validation"] = {
                "first_episode": VAL_FIRST_EPISODE,
                "episodes": self.cfg.val_episodes,
                "every": self.cfg.val_every,
                "policy": self.cfg.val_policy,
                "scores": list(self.scores),
                **self.cost,
            }
        return info

    def save(self) -> None:
        from .checkpoint import save_policy

        info = self.describe()
        save_policy(self.path, self.kept["state"], self.cfg, {k: v for k, v in info.items() if k != "file"})

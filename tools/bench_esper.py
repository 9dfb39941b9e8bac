"""Benchmark esper: does growth pay and does PPO learn it (``--learning``), and how fast
the vectorised env loop runs (env-epochs/s, always).

**Learning** (``--learning``): PPO is trained for ``--train-episodes`` on the default
task, then the fixed host, the heuristic and the trained PPO controller (no updates;
greedy, or sampled as in training with ``--eval-policy sample``; ``--eval-both`` reports
both; the policy kept is, by default, the one with the best return on ``--val-episodes``
validation hosts of the training root seed, validated every ``--val-every`` batches and at
the end; ``--keep-policy best`` keeps the one that earned the best mean training return of a
batch, ``last`` the last) each run ``--eval-episodes`` held-out episodes (hosts from another
root seed that training never saw). JSON ``learning: {fixed_host, heuristic, ppo}`` with
``val_acc_mean``, ``val_acc_ci95``, ``added_params_mean``, ``return_mean``, plus the PPO
reward curve (mean return per training batch).

**Throughput**: env-epochs/s for 1, 2, 4 envs, heuristic and PPO controllers, modes
``serial`` (one env at a time), ``vectorised`` (n envs, one device group) and
``cpu-threads`` (n envs over min(n, cores) CPU groups), plus ``cuda:0`` AMP off/bf16/fp16
and all GPUs where CUDA is present. Every configuration runs ``--repeats`` times,
interleaved (r1: A B C, r2: A B C, ...), and the median is reported with the spread, so
a 2x is told from noise on a shared machine. Timings are the training loop only.

    uv run python tools/bench_esper.py --quick --output bench_esper.json
    uv run python tools/bench_esper.py --learning --quick --output bench_learning.json

``--quick`` keeps the learning part within ~25 min on 2 cores; ``PARALLEL_RL_SMOKE=1``
shrinks everything to seconds (for the documentation test).

**Upstream** (``--upstream PATH [--upstream-python PY]``): esper-lite's own PPO loop
(``train_ppo_vectorized``) on our digits task beside ours, one env each, the same
episodes, epochs and three slots: wall and CPU seconds per env-epoch and final accuracy.
PY is the interpreter of an environment with esper-lite's dependencies (the benchmark
installs nothing); our tensors reach upstream as its own ``TaskSpec`` (see
``upstream_child``). Where it cannot run, one line says why (exit 2 when PATH is not a
checkout, 1 when PY lacks its dependencies), before torch is imported.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time


def _cfg(mode: str, **over):
    from esper_multigpu.cli import SMOKE_TRAIN_BATCHES
    from esper_multigpu.config import build_config
    from parallel_core.cli import smoke_mode

    base = dict(telemetry_dir=None, quiet=True, cpu_threads=1, tensorboard=False)
    if smoke_mode():  # as `esper` does in smoke mode: the same code path, 4 steps per epoch
        base["env"] = {"train_batches": SMOKE_TRAIN_BATCHES}
    base.update(over)
    return build_config(mode, {}, base)


def evaluate(
    mode: str, devices, episodes: int, seed: int, max_epochs: int, agent_state=None, greedy: bool = True,
    first_episode: int = 0, **over,
) -> dict:
    """``episodes`` episodes (``first_episode``, +1, ...) of root seed ``seed``, of one
    controller in one batch; no learning (``esper_multigpu.selection.evaluate``, as
    ``esper eval`` runs it). ``greedy=False`` samples PPO's actions (seeded by ``seed``)."""
    from esper_multigpu.selection import evaluate as run_eval

    cfg = _cfg(mode, devices=devices, n_envs=episodes, episodes=episodes, seed=seed, max_epochs=max_epochs, **over)
    return run_eval(cfg, agent_state, greedy=greedy, first_episode=first_episode)


def _ppo_cfg(args, devices, seed: int, telemetry_dir):
    """The PPO training configuration the bench's flags describe (torch-free)."""
    return _cfg(
        "ppo",
        devices=devices,
        n_envs=args.n_envs_train,
        episodes=args.train_episodes,
        seed=seed,
        max_epochs=args.max_epochs,
        telemetry_dir=telemetry_dir,
        ppo={"lr": args.ppo_lr, "ent_coef": args.ppo_ent_coef, "ent_coef_final": args.ppo_ent_coef_final,
             "anneal_lr": args.ppo_anneal_lr, "norm_reward": args.ppo_norm_reward,
             "choices_only": args.ppo_choices_only, "update_epochs": args.ppo_update_epochs,
             "norm_adv": args.ppo_norm_adv, "norm_adv_center": args.ppo_norm_adv_center,
             "minibatch_envs": args.ppo_minibatch_envs},
        reward={"rent": args.rent, "rent_shape": args.rent_shape},
        max_seeds=args.max_seeds,
        blueprints=args.blueprints,
        quiet=False,
        keep_policy=args.keep_policy,
        val_every=args.val_every,
        val_episodes=args.val_episodes,
        val_policy=args.eval_policy,
    )


def train_ppo(args, devices, seed: int, telemetry_dir):
    """Train PPO from ``seed``; the kept state (``--keep-policy``, chosen by esper's own
    ``PolicySelector``, as ``esper train ppo`` does), the batch it acts in, the per-batch
    curves, the validation scores (``--keep-policy val``) and the wall time."""
    from esper_multigpu.selection import PolicySelector
    from esper_multigpu.train import run_training

    t0 = time.perf_counter()
    cfg = _ppo_cfg(args, devices, seed, telemetry_dir)
    print(
        f"bench: training PPO (seed {seed}) for {args.train_episodes} episodes ({args.n_envs_train} envs on {devices})",
        file=sys.stderr,
    )
    selector = PolicySelector(cfg, log=lambda s: print(s, file=sys.stderr))
    summary, _ = run_training(
        cfg, log=lambda s: print(s, file=sys.stderr) if s.startswith("batch") else None, selector=selector
    )
    curve = [b["mean_return"] for b in summary["batches"]]
    acc_curve = [b["mean_final_val_acc"] for b in summary["batches"]]
    kept = summary["kept_policy"]
    validation = kept.get("validation")
    if validation is not None:
        validation = {k: v for k, v in validation.items() if k != "policy"}
    state = selector.kept["state"]
    return state, kept["batch"], curve, acc_curve, summary["host_params"], time.perf_counter() - t0, validation


def _halves(curve: list[float]) -> tuple[float, float | None]:
    half = max(1, len(curve) // 2)
    return statistics.fmean(curve[:half]), (statistics.fmean(curve[half:]) if curve[half:] else None)


def learning(args, devices, progress=lambda partial: None) -> dict:
    """Fixed host, heuristic and PPO trained from each of ``--train-seeds`` seeds, all
    evaluated greedily on the same held-out hosts. ``progress`` gets the partial result
    after every evaluation (the caller writes it, so a long run keeps what it has)."""
    t0 = time.perf_counter()
    # the first is the one reported as ``ppo``; the other (``--eval-both``) as ``ppo_<policy>``
    policies = [args.eval_policy] + ([{"greedy": "sample", "sample": "greedy"}[args.eval_policy]] if args.eval_both else [])
    from esper_multigpu.selection import held_out_seed

    held_out = held_out_seed(args.seed)  # another root seed: hosts training never saw
    reward = {"rent": args.rent, "rent_shape": args.rent_shape}
    out: dict = {
        "train_episodes": args.train_episodes,
        "train_seeds": [args.first_train_seed + i for i in range(args.train_seeds)],
        "eval_episodes": args.eval_episodes,
        "eval_policy": args.eval_policy,
        "eval_policies": policies,
        "keep_policy": args.keep_policy,
        "val_episodes": args.val_episodes,
        "val_every": args.val_every,
        "max_epochs": args.max_epochs,
        "ppo_lr": args.ppo_lr,
        "ppo_ent_coef": args.ppo_ent_coef,
        "ppo_ent_coef_final": args.ppo_ent_coef_final,
        "ppo_anneal_lr": args.ppo_anneal_lr,
        "ppo_norm_reward": args.ppo_norm_reward,
        "ppo_choices_only": args.ppo_choices_only,
        "ppo_norm_adv": args.ppo_norm_adv,
        "ppo_norm_adv_center": args.ppo_norm_adv_center,
        "ppo_minibatch_envs": args.ppo_minibatch_envs,
        "ppo_update_epochs": args.ppo_update_epochs,
        "train_envs": args.n_envs_train,
        "rent": args.rent,
        "rent_shape": args.rent_shape,
        "max_seeds": args.max_seeds,
        "heuristic_max_seeds": None,  # the heuristic runs its default: one seed per slot
        "blueprints": args.blueprints,
        "devices": devices,
    }
    for name, mode in (("fixed_host", "fixed"), ("heuristic", "heuristic")) if args.baselines else ():
        print(f"bench: held-out evaluation of {name} ({args.eval_episodes} episodes)", file=sys.stderr)
        out[name] = evaluate(mode, devices, args.eval_episodes, held_out, args.max_epochs, reward=reward, blueprints=args.blueprints)
        progress(out)
    runs = []
    for seed in out["train_seeds"]:
        tdir = args.telemetry_dir if args.train_seeds == 1 or not args.telemetry_dir else f"{args.telemetry_dir}/seed{seed}"
        state, kept_batch, curve, acc_curve, host_params, train_s, validation = train_ppo(args, devices, seed, tdir)
        evals = {}
        for policy in policies:
            print(f"bench: held-out evaluation of ppo (seed {seed}, {policy}, {args.eval_episodes} episodes)", file=sys.stderr)
            evals[policy] = evaluate(
                "ppo", devices, args.eval_episodes, held_out, args.max_epochs, agent_state=state,
                greedy=policy == "greedy", reward=reward, max_seeds=args.max_seeds, blueprints=args.blueprints,
            )  # fmt: skip
        first, second = _halves(curve)
        runs.append({**evals[policies[0]], "eval": evals, "train_seed": seed, "train_wall_s": train_s,
                     "kept_policy_batch": kept_batch, "validation": validation,
                     "reward_curve": curve, "train_val_acc_curve": acc_curve, "curve_first_half_mean": first,
                     "curve_second_half_mean": second})  # fmt: skip
        out["host_params"] = host_params
        out["ppo_runs"] = runs
        out["ppo"] = _across_seeds(runs)
        for policy in policies[1:]:
            out[f"ppo_{policy}"] = _across_seeds([{**r, **r["eval"][policy]} for r in runs])
        # the first seed's curve under the historical keys; every seed's in ppo_runs
        out["ppo_reward_curve"] = runs[0]["reward_curve"]
        out["ppo_train_val_acc_curve"] = runs[0]["train_val_acc_curve"]
        out["ppo_curve_first_half_mean"] = runs[0]["curve_first_half_mean"]
        out["ppo_curve_second_half_mean"] = runs[0]["curve_second_half_mean"]
        out["total_wall_s"] = time.perf_counter() - t0
        progress(out)
    return out


def _across_seeds(runs: list[dict]) -> dict:
    """PPO over its training seeds. With one seed: that run's held-out statistics (95%
    interval over episodes). With several: the mean over seeds of each run's held-out
    mean, and the 95% interval over seeds (the training seed is the unit that varies)."""
    if len(runs) == 1:
        r = runs[0]
        return {k: r[k] for k in ("episodes", "val_acc_mean", "val_acc_ci95", "added_params_mean",
                                  "return_mean", "added_acc_mean", "val_acc", "added_params")}  # fmt: skip
    from esper_multigpu.selection import mean_ci95 as _stats

    acc_m, acc_ci = _stats([r["val_acc_mean"] for r in runs])
    par_m, par_ci = _stats([r["added_params_mean"] for r in runs])
    ret_m, ret_ci = _stats([r["return_mean"] for r in runs])
    return {
        "episodes": sum(r["episodes"] for r in runs),
        "seeds": len(runs),
        "interval_over": "training seeds",
        "val_acc_mean": acc_m,
        "val_acc_ci95": acc_ci,
        "added_params_mean": par_m,
        "added_params_ci95": par_ci,
        "return_mean": ret_m,
        "return_ci95": ret_ci,
        "added_acc_mean": statistics.fmean(r["added_acc_mean"] for r in runs),
        "val_acc_per_seed": [r["val_acc_mean"] for r in runs],
        "added_params_per_seed": [r["added_params_mean"] for r in runs],
        "curve_halves_per_seed": [[r["curve_first_half_mean"], r["curve_second_half_mean"]] for r in runs],
    }


#: what an esper-lite checkout must offer to run "the same task, host size and slots"
UPSTREAM_ENTRY = "src/esper/simic/training/vectorized.py"
#: our slots (after each of the three conv stages) are upstream's r0c0..r0c2 (after each block)
UPSTREAM_SLOTS = {"early": "r0c0", "mid": "r0c1", "late": "r0c2"}


def upstream_problem(path: str) -> str | None:
    """Why esper-lite at ``path`` cannot run in this interpreter's environment (None when
    it can). Checked without importing the checkout: it must be an esper-lite source tree
    and every distribution its ``pyproject.toml`` depends on must be installed (the
    benchmark installs nothing; ``--upstream-python`` names an environment that has them)."""
    import importlib.metadata as md
    import re
    import tomllib
    from pathlib import Path

    root = Path(path).expanduser()
    if not (root / UPSTREAM_ENTRY).is_file():
        return f"{path} is not an esper-lite checkout (no {UPSTREAM_ENTRY})"
    try:
        deps = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        return f"cannot read the dependencies of {root / 'pyproject.toml'} ({type(exc).__name__})"
    missing = []
    for dep in deps:
        name = re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0]
        try:
            md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
    if missing:
        return (
            f"esper-lite at {path} cannot run with {sys.executable}: it needs {', '.join(missing)}, not installed "
            "there (the benchmark installs nothing; give --upstream-python PY of an environment that has them, "
            "see docs/esper-multigpu.md)"
        )
    return None


def upstream_child(path: str, data_file: str, out_file: str, episodes: int, max_epochs: int, slots: list[str], seed: int) -> int:
    """Run in the *upstream* interpreter (``--upstream-python``): esper-lite's own PPO
    loop, ``train_ppo_vectorized``, on our digits tensors. The task is handed over as an
    esper-lite ``TaskSpec`` (its model factory builds its own ``CNNHost`` with
    ``base_channels=4``, i.e. 4, 8, 16 channels like our width-4 host; its datasets are
    our tensors, the grey image repeated on the 3 input channels its host expects). Its
    task registry has no hook, so ``esper.runtime.get_task_spec`` answers our spec for
    the name ``digits``; nothing else of upstream is touched."""
    problem = upstream_problem(path)
    if problem:
        print(f"bench_esper.py: error: --upstream: {problem}", file=sys.stderr)
        return 1
    import resource

    sys.path.insert(0, f"{path}/src")
    import esper.runtime as runtime
    import torch
    from esper.kasmina.host import CNNHost, MorphogeneticModel
    from esper.leyline import LossRewardConfig
    from esper.runtime.tasks import TaskSpec
    from esper.simic.training.vectorized import train_ppo_vectorized
    from esper.tamiyo.policy.features import TaskConfig
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(1)
    d = torch.load(data_file, weights_only=True)
    rgb = lambda x: x.expand(-1, 3, -1, -1).contiguous()  # noqa: E731
    train, val = TensorDataset(rgb(d["x_train"]), d["y_train"]), TensorDataset(rgb(d["x_val"]), d["y_val"])

    class DigitsSpec(TaskSpec):
        def get_datasets(self):
            return train, val

    task_config = TaskConfig.for_cifar10()

    def make_model(device, slots=None, permissive_gates=True):
        host = CNNHost(num_classes=int(d["n_classes"]), base_channels=4)
        return MorphogeneticModel(host, device=device, slots=slots, task_config=task_config, permissive_gates=permissive_gates)

    def loaders(batch_size=64, **_):
        return DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(val, batch_size=batch_size)

    spec = DigitsSpec(
        name="digits", topology="cnn", task_type="classification", model_factory=make_model,
        dataloader_factory=loaders, dataloader_defaults={"batch_size": 64, "num_workers": 0},
        task_config=task_config, loss_reward_config=LossRewardConfig.for_cifar10(), num_classes=int(d["n_classes"]),
    )  # fmt: skip
    registry = runtime.get_task_spec
    runtime.get_task_spec = lambda name: spec if name == "digits" else registry(name)
    host_params = sum(p.numel() for p in CNNHost(num_classes=int(d["n_classes"]), base_channels=4).parameters())
    r0, c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
    _agent, history = train_ppo_vectorized(
        n_episodes=episodes, n_envs=1, max_epochs=max_epochs, device="cpu", devices=["cpu"], task="digits",
        use_telemetry=False, slots=[UPSTREAM_SLOTS[s] for s in slots], num_workers=0, batch_size_per_env=64,
        compile_mode="off", seed=seed, phase_profiler=False, quiet_analytics=True,
    )  # fmt: skip
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    # each batch record carries the run's episode list so far: the last one has them all
    episodes_out = history[-1].get("episode_history", []) if history else []
    step_ms = sum(h.get("throughput_step_time_ms_sum", 0.0) for h in history)
    with open(out_file, "w", encoding="utf-8") as f:
        json.dump({
            "wall_s": wall, "cpu_s": cpu, "cpu_user_s": r1.ru_utime - r0.ru_utime,
            "episodes": len(episodes_out), "final_val_acc": [e["final_accuracy"] / 100 for e in episodes_out],
            "host_params": host_params, "env_step_s": step_ms / 1000, "slots": [UPSTREAM_SLOTS[s] for s in slots],
        }, f)  # fmt: skip
    return 0


def run_upstream(args) -> dict:
    """esper-lite's PPO loop and ours, one env each, the same digits data, episodes,
    epochs and slots, one after the other; wall and CPU seconds per env-epoch, final
    accuracy. Raises SystemExit(1) with upstream's one-line reason if it cannot run."""
    import os
    import subprocess
    import tempfile

    import torch

    from esper_multigpu.tolaria.tasks import load_task
    from esper_multigpu.train import run_training

    task = load_task("digits")
    episodes, epochs = args.upstream_episodes, args.max_epochs
    slots = ["early", "mid", "late"]
    with tempfile.TemporaryDirectory() as tmp:
        data, out = os.path.join(tmp, "digits.pt"), os.path.join(tmp, "upstream.json")
        torch.save({"x_train": task.x_train, "y_train": task.y_train, "x_val": task.x_val, "y_val": task.y_val,
                    "n_classes": task.n_classes}, data)  # fmt: skip
        cmd = [args.upstream_python, __file__, "--upstream-child", args.upstream, data, out,
               str(episodes), str(epochs), ",".join(slots), str(args.seed)]  # fmt: skip
        print(f"bench: esper-lite's loop ({episodes} episode(s) x {epochs} epochs, 1 env)", file=sys.stderr)
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            print(lines[-1] if lines else f"bench_esper.py: error: --upstream: exited {proc.returncode}", file=sys.stderr)
            raise SystemExit(1)
        with open(out, encoding="utf-8") as f:
            up = json.load(f)
    print(f"bench: our loop ({episodes} episode(s) x {epochs} epochs, 1 env)", file=sys.stderr)
    cfg = _cfg("ppo", devices=["cpu"], n_envs=1, episodes=episodes, seed=args.seed, max_epochs=epochs, slots=slots)
    c0, t0 = time.process_time(), time.perf_counter()
    summary, _ = run_training(cfg, log=lambda s: None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    ours = {
        "wall_s": wall, "cpu_s": cpu, "episodes": episodes,
        "final_val_acc": [a for b in summary["batches"] for a in b["final_val_acc"]],
        "host_params": summary["host_params"], "slots": slots,
    }  # fmt: skip
    for side in (up, ours):
        env_epochs = side["episodes"] * epochs
        side["wall_s_per_env_epoch"] = side["wall_s"] / env_epochs
        side["cpu_s_per_env_epoch"] = side["cpu_s"] / env_epochs
        side["final_val_acc_mean"] = statistics.fmean(side["final_val_acc"])
    return {
        "upstream": up, "ours": ours, "task": "digits", "n_envs": 1, "episodes": episodes, "max_epochs": epochs,
        "controller": "ppo (each side's own, learning)", "upstream_python": args.upstream_python,
        "cpu_ratio_ours_over_upstream": ours["cpu_s_per_env_epoch"] / up["cpu_s_per_env_epoch"],
    }  # fmt: skip


def throughput_configs(n_envs_list, cores, cuda_count):
    for controller in ("heuristic", "ppo"):
        for n in n_envs_list:
            yield controller, n, "serial", dict(devices=["cpu"], n_envs=1, episodes=n)
            if n > 1:
                yield controller, n, "vectorised", dict(devices=["cpu"], n_envs=n, episodes=n)
            groups = max(1, min(n, cores))
            if groups > 1:
                yield controller, n, "cpu-threads", dict(devices=["cpu"] * groups, n_envs=n, episodes=n)
            if cuda_count:
                for amp in ("off", "bf16", "fp16"):
                    yield controller, n, f"cuda:0 amp={amp}", dict(devices=["cuda:0"], n_envs=n, episodes=n, amp=amp)
                if cuda_count > 1:
                    devs = [f"cuda:{i}" for i in range(cuda_count)]
                    yield controller, n, f"cuda:0-{cuda_count - 1} amp=bf16", dict(devices=devs, n_envs=n, episodes=n, amp="bf16")


def run_throughput(controller: str, spec: dict, max_epochs: int, task: str) -> float:
    """env-epochs/s of the training loop (batches only: no imports, no data loading)."""
    from esper_multigpu.train import run_training

    cfg = _cfg(controller, task=task, max_epochs=max_epochs, seed=0, **spec)
    summary, _ = run_training(cfg, log=lambda s: None)
    loop = sum(
        len(b["episodes"]) * max_epochs / b["env_epochs_per_s"] for b in summary["batches"]
    )
    return spec["episodes"] * max_epochs / loop


def throughput(args, cores, cuda_count) -> list[dict]:
    configs = list(throughput_configs(args.n_envs, cores, cuda_count))
    samples: dict[int, list[float]] = {i: [] for i in range(len(configs))}
    for r in range(args.repeats):  # interleaved: every configuration once per round
        for i, (controller, _n, _mode, spec) in enumerate(configs):
            samples[i].append(run_throughput(controller, spec, args.throughput_epochs, args.task))
        print(f"bench: throughput round {r + 1}/{args.repeats} done", file=sys.stderr)
    rows = []
    for i, (controller, n, mode, spec) in enumerate(configs):
        s = samples[i]
        rows.append(
            {
                "controller": controller,
                "n_envs": n,
                "mode": mode,
                "devices": spec["devices"],
                "amp": spec.get("amp", "off"),
                "repeats": len(s),
                "env_epochs_per_s": statistics.median(s),
                "min": min(s),
                "max": max(s),
                "samples": s,
            }
        )
    for row in rows:
        serial = next(
            r for r in rows
            if r["controller"] == row["controller"] and r["n_envs"] == row["n_envs"] and r["mode"] == "serial"
        )  # fmt: skip
        row["speedup_vs_serial"] = row["env_epochs_per_s"] / serial["env_epochs_per_s"]
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--learning", action="store_true", help="also run the learning comparison (fixed host vs heuristic vs trained PPO)")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput part")
    p.add_argument("--quick", action="store_true", help="smaller budgets (learning within ~25 min on 2 cores)")
    p.add_argument("--output", "--out", dest="output", default="bench_esper.json", help="JSON report (written atomically)")
    p.add_argument("--n-envs", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--repeats", type=int, help="interleaved rounds per throughput configuration (default 5; quick 3)")
    p.add_argument("--task", default="digits")
    p.add_argument("--max-epochs", type=int, default=12, help="epochs per learning episode")
    p.add_argument("--train-episodes", type=int, help="PPO training episodes (default 96; quick 48)")
    p.add_argument("--eval-episodes", type=int, help="held-out episodes per controller (default 16; quick 8)")
    p.add_argument("--ppo-lr", type=float, default=3e-3)
    p.add_argument("--ppo-ent-coef", type=float, default=0.01, help="PPO entropy bonus (exploration)")
    p.add_argument("--ppo-ent-coef-final", type=float, default=None, help="entropy bonus at the end of training, linear from --ppo-ent-coef (default: constant)")
    p.add_argument("--ppo-anneal-lr", action=argparse.BooleanOptionalAction, default=False, help="PPO learning rate falls linearly to 0 (CleanRL anneal_lr)")
    p.add_argument(
        "--ppo-norm-reward", action=argparse.BooleanOptionalAction, default=False,
        help="rewards scaled by the running std of the discounted return (CleanRL NormalizeReward; default off: the better mean over training seeds 0-4, see docs/esper-multigpu.md)",
    )  # fmt: skip
    p.add_argument(
        "--ppo-norm-adv", action=argparse.BooleanOptionalAction, default=True,
        help="standardise advantages per minibatch (CleanRL norm_adv; default on: the better mean over training seeds 0-3, see docs/esper-multigpu.md)",
    )  # fmt: skip
    p.add_argument(
        "--ppo-norm-adv-center", action=argparse.BooleanOptionalAction, default=True,
        help="with --ppo-norm-adv: subtract the minibatch mean (CleanRL; default); --no-ppo-norm-adv-center only divides by the std, keeping the critic's baseline",
    )  # fmt: skip
    p.add_argument("--ppo-choices-only", action=argparse.BooleanOptionalAction, default=False, help="policy loss and entropy averaged over steps with a choice only")
    p.add_argument("--ppo-update-epochs", type=int, default=8, help="PPO epochs per batch")
    p.add_argument("--train-envs", type=int, default=4, help="envs per PPO training batch")
    p.add_argument("--ppo-minibatch-envs", type=int, default=4, help="envs per PPO minibatch (advantages are standardised per minibatch)")
    p.add_argument("--rent", type=float, default=0.005, help="reward rent per epoch (all controllers' returns)")
    p.add_argument(
        "--rent-shape", choices=["log", "linear"], default="log",
        help="rent on log(1 + seed/host params) (default) or on seed/host params (linear: every parameter costs the same)",
    )  # fmt: skip
    p.add_argument("--train-seeds", type=int, default=1, help="train PPO from this many seeds (--first-train-seed, +1, ...); mean and 95%% interval over them")
    p.add_argument("--first-train-seed", type=int, help="the first PPO training seed (default --seed); held-out hosts depend on --seed only")
    p.add_argument("--no-baselines", dest="baselines", action="store_false", help="skip the fixed host and heuristic evaluations (PPO seeds only)")
    p.add_argument(
        "--blueprints", nargs="+", default=["attention", "depthwise", "conv_light", "conv_heavy"],
        help="blueprints every controller may germinate (default: the four with capacity; not noop, norm)",
    )  # fmt: skip
    p.add_argument(
        "--eval-policy", choices=["greedy", "sample"], default="greedy",
        help="how trained PPO acts on the held-out hosts: each head's most likely action, or sampled as in training (seeded)",
    )  # fmt: skip
    p.add_argument(
        "--keep-policy", choices=["val", "best", "last"], default="val",
        help="which PPO policy is evaluated: the best on validation hosts of the training seed (default; every --val-every batches and the last), "
        "the one that earned the best mean training return of a batch, or the last one",
    )  # fmt: skip
    p.add_argument("--val-episodes", type=int, default=4, help="--keep-policy val: validation hosts (episodes of the training root seed training never reaches)")
    p.add_argument("--val-every", type=int, default=2, help="--keep-policy val: validate the policy after every this many batches (and the last)")
    p.add_argument("--eval-both", action="store_true", help="also evaluate PPO the other way (JSON ppo_greedy / ppo_sample)")
    p.add_argument("--max-seeds", type=int, default=1, help="PPO's growth budget: seeds in the model at once (the heuristic runs its default, one per slot)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--telemetry-dir", default=None, help="keep the PPO training telemetry here")
    p.add_argument(
        "--upstream", metavar="PATH",
        help="an esper-lite checkout: run its own PPO loop on our digits task beside ours (fails with the reason where it cannot run)",
    )  # fmt: skip
    p.add_argument("--upstream-python", metavar="PY", default=sys.executable, help="the interpreter of an environment with esper-lite's dependencies (default: this one)")
    p.add_argument("--upstream-episodes", type=int, help="episodes per side for --upstream (default 2; quick 1)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--upstream-check"]:  # internal: in the upstream interpreter, stdlib only
        problem = upstream_problem(argv[1])
        print(problem or "ok", file=sys.stderr if problem else sys.stdout)
        return 1 if problem else 0
    if argv[:1] == ["--upstream-child"]:  # internal: runs in the upstream interpreter
        path, data, out, episodes, epochs, slots, seed = argv[1:8]
        return upstream_child(path, data, out, int(episodes), int(epochs), slots.split(","), int(seed))
    args = p.parse_args(argv)
    from parallel_core.cli import smoke_mode

    for flag in ("train_seeds", "train_envs", "val_episodes", "val_every"):  # named here: esper's own check would say --n-envs
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')}: must be >= 1; got {getattr(args, flag)}")
    if args.first_train_seed is None:
        args.first_train_seed = args.seed
    if args.upstream:
        from pathlib import Path

        if not (Path(args.upstream).expanduser() / UPSTREAM_ENTRY).is_file():
            p.error(f"--upstream: {args.upstream} is not an esper-lite checkout (no {UPSTREAM_ENTRY})")
        if not Path(args.upstream_python).is_file():
            p.error(f"--upstream-python: no such interpreter: {args.upstream_python}")
        args.upstream = str(Path(args.upstream).expanduser().resolve())
        import subprocess

        check = subprocess.run(
            [args.upstream_python, __file__, "--upstream-check", args.upstream], capture_output=True, text=True
        )  # fmt: skip
        if check.returncode != 0:  # before torch is imported: a missing dependency answers at once
            lines = check.stderr.strip().splitlines() or [f"{args.upstream_python} exited {check.returncode}"]
            print(f"bench_esper.py: error: --upstream: {lines[-1]}", file=sys.stderr)
            return 1
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.train_episodes = args.train_episodes or (48 if args.quick else 96)
    args.eval_episodes = args.eval_episodes or (8 if args.quick else 16)
    args.throughput_epochs = 3 if args.quick else 6
    args.upstream_episodes = args.upstream_episodes or (1 if args.quick else 2)
    args.n_envs_train = args.train_envs
    if smoke_mode():
        args.n_envs, args.repeats, args.throughput_epochs = [2], 1, 2
        args.train_episodes, args.eval_episodes, args.max_epochs, args.n_envs_train = 2, 2, 3, 2
        args.val_episodes = min(args.val_episodes, 2)
        args.upstream_episodes = 1
    from esper_multigpu.config import ConfigError

    try:  # every flag that reaches esper's config is checked before any work starts
        _ppo_cfg(args, ["cpu"], args.first_train_seed, None)
    except ConfigError as e:
        p.error(str(e))

    import torch

    from parallel_core.budget import available_cores
    from parallel_core.devices import cuda_device_count
    from parallel_core.io import atomic_write

    torch.set_num_threads(1)
    cores, cuda_count = available_cores(), cuda_device_count()
    devices = ["cuda:0"] if cuda_count else ["cpu"] * max(1, min(2, cores))
    report = {
        "benchmark": "esper",
        "task": args.task,
        "cores": cores,
        "cuda_devices": cuda_count,
        "gpu": torch.cuda.get_device_name(0) if cuda_count else None,
        "torch": torch.__version__,
        "quick": args.quick,
        "smoke": smoke_mode(),
    }
    if args.upstream:
        report["upstream"] = run_upstream(args)
    if args.learning:
        def partial(learning_so_far):
            with atomic_write(args.output, "w", encoding="utf-8") as f:
                json.dump({**report, "learning": learning_so_far, "partial": True}, f, indent=2)

        report["learning"] = learning(args, devices, progress=partial)
    if not args.no_throughput:
        report["throughput"] = {
            "max_epochs": args.throughput_epochs,
            "repeats": args.repeats,
            "statistic": "median of interleaved repeats",
            "results": throughput(args, cores, cuda_count),
        }
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with atomic_write(args.output, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=120, stderr=False)
    if "learning" in report:
        L = report["learning"]
        t = Table(title=f"esper learning: held-out {L['eval_episodes']} episodes, PPO trained {L['train_episodes']}")
        for col in ("controller", "val acc", "±95%", "added params", "return"):
            t.add_column(col, justify="right")
        for name in ("fixed_host", "heuristic", "ppo"):
            if name not in L:
                continue
            r = L[name]
            t.add_row(name, f"{r['val_acc_mean']:.4f}", f"{r['val_acc_ci95']:.4f}", f"{r['added_params_mean']:.0f}", f"{r['return_mean']:+.4f}")
        console.print(t)
        for run in L["ppo_runs"]:
            console.print(
                f"PPO seed {run['train_seed']}: held-out {run['val_acc_mean']:.4f} with {run['added_params_mean']:.0f} params; "
                "reward curve (mean return per batch): " + " ".join(f"{x:+.3f}" for x in run["reward_curve"])
            )
    if "upstream" in report:
        U = report["upstream"]
        t = Table(title=f"esper-lite's loop vs ours: digits, 1 env, {U['episodes']} episode(s) x {U['max_epochs']} epochs, PPO")
        for col in ("loop", "host params", "s/env-epoch (wall)", "CPU s/env-epoch", "final val acc"):
            t.add_column(col, justify="right")
        for name in ("upstream", "ours"):
            r = U[name]
            t.add_row(name, str(r["host_params"]), f"{r['wall_s_per_env_epoch']:.2f}", f"{r['cpu_s_per_env_epoch']:.2f}", f"{r['final_val_acc_mean']:.4f}")
        console.print(t)
    if "throughput" in report:
        t = Table(title=f"esper env-epochs/s ({args.task}, {args.throughput_epochs} epochs, median of {args.repeats}, {cores} cores)")
        for col in ("controller", "n_envs", "mode", "env-epochs/s", "min-max", "speedup"):
            t.add_column(col, justify="right")
        for r in report["throughput"]["results"]:
            t.add_row(r["controller"], str(r["n_envs"]), r["mode"], f"{r['env_epochs_per_s']:.2f}", f"{r['min']:.2f}-{r['max']:.2f}", f"{r['speedup_vs_serial']:.2f}x")
        console.print(t)
    print(f"bench: wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

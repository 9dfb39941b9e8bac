"""Command-line entry point: ``esper train {ppo,heuristic,fixed} ...``, ``esper eval
{ppo,heuristic,fixed} ...`` and ``esper telemetry {validate,plot} FILE``.

With no arguments ``esper`` runs a small demo job: ``esper train ppo --n-envs 2 --episodes 2``
on the digits task, on CUDA if present, else the CPU.

Every argument (flags, config file, device names, output paths) is checked before torch
is imported, so a bad command answers in well under 2 s (``parallel_core.cli``: one line,
exit 2). ``PARALLEL_RL_SMOKE=1`` shrinks any training job to a few seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from parallel_core.cli import (
    ArgumentParser,
    CliError,
    UsageError,
    add_quiet_flag,
    emit_json,
    run_cli,
    smoke_mode,
)

from .config import BLUEPRINT_NAMES, SLOT_NAMES, TASKS, ConfigError, build_config, read_config_file

PROG = "esper"
DEFAULT_JOB = ("train", "ppo", "--n-envs", "2", "--episodes", "2")

EXAMPLES = """\
examples:
  esper                                                     # demo: train ppo, 2 envs x 12 epochs, digits
  esper train heuristic                                      # the heuristic baseline (1 episode)
  esper train fixed                                          # the fixed host: no growth
  esper train ppo --devices cpu --episodes 1 --max-epochs 10
  esper train ppo --devices cuda:0 cuda:1 --n-envs 8 --episodes 64 --amp bf16 --save ckpt.pt
  esper train ppo --resume ckpt.pt --save ckpt.pt --episodes 128
  esper train ppo --episodes 48 --save ckpt.pt              # keeps ckpt.kept.pt: best on validation hosts
  esper eval ppo --policy ckpt.kept.pt --episodes 16        # held-out hosts, no updates: JSON on stdout
  esper eval heuristic --like ckpt.kept.pt --episodes 16    # the baseline on the same hosts
  esper telemetry validate esper-telemetry/ppo.jsonl
  esper telemetry plot esper-telemetry/ppo.jsonl --output ppo.png
"""


def _positive(flag: str, minimum: int = 1):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{flag} must be >= {minimum}; got {value}")
        return value

    return parse


def _positive_float(flag: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number; got {text!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{flag} must be a finite number > 0; got {text}")
        return value

    return parse


def _train_flags(p: argparse.ArgumentParser, mode: str) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE", help="YAML/JSON config; unknown keys are errors; flags override it")
    g.add_argument("--task", choices=TASKS, help="digits (default, built in), cifar10 (needs --data-dir), synthetic")
    g.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (never downloaded at run time)")
    g.add_argument("--devices", nargs="+", metavar="DEV", help="e.g. cpu | cuda:0 cuda:1 | cpu cpu (default: cuda:0 if present, else cpu)")
    g.add_argument("--device-strategy", choices=("round_robin", "balanced"), help="how envs are dealt to devices")
    g.add_argument("--n-envs", type=_positive("--n-envs"), help=f"environments run at once (default {'4' if mode == 'ppo' else '1'})")
    g.add_argument("--episodes", type=_positive("--episodes"), help=f"total episodes, counting those of a resumed checkpoint (default {'4' if mode == 'ppo' else '1'})")
    g.add_argument("--max-epochs", type=_positive("--max-epochs", 2), help="epochs per episode (default 12)")
    g.add_argument("--slots", nargs="+", choices=SLOT_NAMES, help="enabled slots (default: early mid late)")
    g.add_argument("--blueprints", nargs="+", choices=BLUEPRINT_NAMES, help="blueprints a controller may germinate (default: all but noop)")
    g.add_argument("--max-seeds", type=_positive("--max-seeds"), help="at most this many seeds in the model at once (default: one per slot)")
    g.add_argument("--amp", choices=("off", "bf16", "fp16"), help="mixed precision on CUDA envs (CPU envs run float32; the run record says which ran)")
    g.add_argument("--seed", type=_positive("--seed", 0), help="root seed (default 42)")
    g.add_argument("--batch-size", type=_positive("--batch-size"), help="minibatch size of the host training (default 64)")
    g.add_argument("--width", type=_positive("--width", 4), help="host width: channels of the first stage, a multiple of 4 (default 4: too small for digits on purpose)")
    g.add_argument("--cpu-threads", type=_positive("--cpu-threads"), help="torch threads per CPU device group (default 1; use --devices cpu cpu for parallel CPU envs)")
    g.add_argument("--telemetry-dir", help=f"where {mode}.jsonl and tb/ go (default esper-telemetry)")
    g.add_argument("--no-telemetry", action="store_true", help="write no telemetry file")
    g.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard scalars beside the JSONL")
    add_quiet_flag(g)
    if mode == "ppo":
        q = p.add_argument_group("ppo")
        q.add_argument("--policy-device", help="device of the policy network (default: the first of --devices)")
        q.add_argument("--lr", type=_positive_float("--lr"), help="policy learning rate (default 1e-3)")
        q.add_argument("--save", metavar="CKPT", help="save the policy after every batch (atomically)")
        q.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint up to --episodes in total (telemetry is appended)")
        k = p.add_argument_group("kept policy (besides the checkpoint's last one)")
        k.add_argument(
            "--keep-policy", choices=("last", "val", "best"),
            help="val: the best mean return on validation hosts of the root seed (episodes training never reaches); "
            "best: the best mean training return of a batch; last. Default: val with --save or --kept-policy, else last",
        )  # fmt: skip
        k.add_argument("--kept-policy", metavar="FILE", help="where the kept policy goes (default with --save CKPT: CKPT with .kept.pt)")
        k.add_argument("--val-every", type=_positive("--val-every"), help="validate after every this many updates, and after the last (default 2)")
        k.add_argument("--val-episodes", type=_positive("--val-episodes"), help="validation hosts per validation (default 4)")
        k.add_argument("--val-policy", choices=("greedy", "sample"), help="how the policy acts on them (default greedy, as esper eval)")


EVAL_EPISODES = 8


def _eval_flags(p: argparse.ArgumentParser, mode: str) -> None:
    import textwrap

    p.description = textwrap.fill(
        f"Run {'a saved PPO policy' if mode == 'ppo' else 'the ' + mode + ' controller'} with no updates on held-out "
        "hosts (by default those of root seed training seed + 10000, which training and validation never see) and "
        "print JSON on stdout: val_acc_mean, val_acc_ci95, added_params_mean, return_mean and the per-episode "
        "val_acc, added_params, returns. Progress goes to stderr (-q silences it).",
        width=88,
    )
    g = p.add_argument_group("eval")
    if mode == "ppo":
        g.add_argument("--policy", metavar="FILE", required=True, help="a policy file (--kept-policy) or a checkpoint (--save: its last policy)")
        g.add_argument(
            "--eval-policy", choices=("greedy", "sample"), default="greedy",
            help="each head's most likely action (default), or sampled as in training (seeded by --seed)",
        )  # fmt: skip
    else:
        g.add_argument("--like", metavar="FILE", help="the settings (task, epochs, reward, seed, ...) of this policy file or checkpoint's training")
        g.add_argument("--config", metavar="FILE", help="YAML/JSON training config to take the settings from instead")
    g.add_argument("--episodes", type=_positive("--episodes"), default=EVAL_EPISODES, help=f"held-out episodes (default {EVAL_EPISODES})")
    g.add_argument(
        "--seed", type=_positive("--seed", 0),
        help="root seed of the held-out hosts (default: the training seed + 10000, never a training or validation host)",
    )  # fmt: skip
    g.add_argument("--first-episode", type=_positive("--first-episode", 0), default=0, help="the first episode of that root seed (default 0)")
    g.add_argument("--devices", nargs="+", metavar="DEV", help="e.g. cpu | cuda:0 (default: cuda:0 if present, else cpu)")
    g.add_argument("--n-envs", type=_positive("--n-envs"), help="episodes run at once (default: all of them, in one batch)")
    g.add_argument("--data-dir", help="folder holding cifar-10-batches-py/ (for a policy trained on cifar10)")
    add_quiet_flag(g)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Morphogenetic training steered by PPO (or a heuristic) across devices.",
        epilog=EXAMPLES,
    )
    sub = parser.add_subparsers(dest="command", parser_class=ArgumentParser)
    for command, help_, modes, add_flags in (
        ("train", "train a controller", (
            ("ppo", "learn a growth policy with PPO"),
            ("heuristic", "run the heuristic baseline controller"),
            ("fixed", "train the fixed host (no growth): the baseline growth must beat"),
        ), _train_flags),
        ("eval", "evaluate a controller on held-out hosts, no updates", (
            ("ppo", "evaluate a saved PPO policy (policy file or checkpoint)"),
            ("heuristic", "evaluate the heuristic baseline"),
            ("fixed", "evaluate the fixed host (no growth)"),
        ), _eval_flags),
    ):  # fmt: skip
        msub = sub.add_parser(command, help=help_, epilog=EXAMPLES).add_subparsers(
            dest="mode", required=True, parser_class=ArgumentParser
        )
        for mode, mode_help in modes:
            add_flags(msub.add_parser(mode, help=mode_help, epilog=EXAMPLES), mode)
    tel = sub.add_parser("telemetry", help="telemetry tools")
    tsub = tel.add_subparsers(dest="action", required=True, parser_class=ArgumentParser)
    v = tsub.add_parser("validate", help="check a telemetry JSONL file against its schema")
    v.add_argument("file")
    pl = tsub.add_parser("plot", help="draw reward, accuracy and per-slot stages over episodes to PNG")
    pl.add_argument("file")
    pl.add_argument("-o", "--output", help="PNG to write (default: FILE with .png)")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    keys = (
        "task", "data_dir", "devices", "device_strategy", "n_envs", "episodes", "max_epochs",
        "slots", "max_seeds", "blueprints", "amp", "seed", "cpu_threads", "telemetry_dir", "policy_device", "save", "resume",
        "keep_policy", "kept_policy", "val_every", "val_episodes", "val_policy",
    )  # fmt: skip
    o = {k: getattr(args, k, None) for k in keys}
    o["quiet"] = True if args.quiet else None
    o["tensorboard"] = False if args.no_tensorboard else None
    env = {k: getattr(args, k) for k in ("batch_size", "width") if getattr(args, k, None) is not None}
    o["env"] = env or None
    o["ppo"] = {"lr": args.lr} if getattr(args, "lr", None) is not None else None
    return o


#: optimisation steps per epoch in a smoke run (a full digits epoch is 23)
SMOKE_TRAIN_BATCHES = 4


def _smoke(cfg) -> None:
    """PARALLEL_RL_SMOKE=1: the same code path (2 envs, 3 epochs, the whole lifecycle
    machinery, telemetry, checkpoints), with 4 optimisation steps per epoch."""
    cfg.n_envs = min(cfg.n_envs, 2)
    if not cfg.resume:  # a resumed run's --episodes counts the checkpoint's episodes too
        cfg.episodes = min(cfg.episodes, cfg.n_envs)
    cfg.max_epochs = min(cfg.max_epochs, 3)
    cfg.val_episodes = min(cfg.val_episodes, 2)
    cfg.env = dataclasses.replace(cfg.env, train_batches=min(cfg.env.train_batches or SMOKE_TRAIN_BATCHES, SMOKE_TRAIN_BATCHES))


def precheck_devices(specs: list[str]) -> None:
    """Device names and, where it is certain without torch, their existence (UsageError)."""
    from parallel_core.devices import DeviceError
    from parallel_core.devices import precheck_devices as check

    try:
        check(specs, "--devices")
    except DeviceError as exc:
        raise UsageError(str(exc)) from None


def _check_output_dir(flag: str, directory: str) -> None:
    d = Path(directory)
    probe = d
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise CliError(f"{flag} {directory}: cannot write there ({probe} is not a writable folder)")


def _train(args: argparse.Namespace) -> int:
    try:
        file_values = read_config_file(args.config) if args.config else {}
        cfg = build_config(args.mode, file_values, _overrides(args))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.no_telemetry:
        cfg.telemetry_dir = None
    if cfg.mode == "ppo":
        _resolve_keep_policy(cfg, explicit=getattr(args, "keep_policy", None) is not None or "keep_policy" in file_values)
    if smoke_mode():
        _smoke(cfg)
    if cfg.devices:
        precheck_devices(cfg.devices)
    if cfg.policy_device:
        precheck_devices([cfg.policy_device])
    if cfg.task == "cifar10":
        if cfg.data_dir is None:
            raise UsageError("--task cifar10 needs --data-dir DIR containing cifar-10-batches-py/ (never downloaded at run time)")
        if not (Path(cfg.data_dir) / "cifar-10-batches-py").is_dir():
            raise UsageError(
                f"--data-dir: CIFAR-10 not found: expected {Path(cfg.data_dir) / 'cifar-10-batches-py'}; fetch it once "
                "(python -c \"import torchvision; torchvision.datasets.CIFAR10('DIR', download=True)\") and pass --data-dir DIR"
            )
    if cfg.resume and not Path(cfg.resume).is_file():
        raise UsageError(f"--resume: checkpoint {cfg.resume} does not exist")
    if cfg.telemetry_dir:
        _check_output_dir("--telemetry-dir", cfg.telemetry_dir)
    if cfg.save:
        _check_output_dir("--save", str(Path(cfg.save).parent))
    if cfg.mode == "ppo" and cfg.kept_policy_path():
        _check_output_dir("--kept-policy", str(Path(cfg.kept_policy_path()).parent))

    # only now the heavy imports
    from parallel_core.devices import DeviceError, visible_devices

    from .checkpoint import CheckpointError
    from .kasmina.blueprints import BlueprintError
    from .tolaria.tasks import TaskError
    from .train import run_training

    try:
        summary, _ = run_training(cfg)
    except DeviceError as exc:
        raise UsageError(f"{exc} (visible devices: {', '.join(visible_devices())})") from None
    except (TaskError, CheckpointError, BlueprintError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # e.g. a --telemetry-dir or --save path that became unwritable
        where = f"{exc.filename}: " if exc.filename else ""
        raise CliError(f"{where}{exc.strerror or exc}") from None
    emit_json(summary)
    return 0


def _resolve_keep_policy(cfg, explicit: bool) -> None:
    """No rule given: ``val`` when the kept policy has a file to go to (``--save`` or
    ``--kept-policy``), else ``last`` (validation would cost time for nothing kept). A rule
    other than ``last`` with nowhere to write the policy is a usage error."""
    if not explicit:
        cfg.keep_policy = "val" if cfg.save or cfg.kept_policy else "last"
    if cfg.keep_policy != "last" and not cfg.kept_policy_path():
        raise UsageError(
            f"--keep-policy {cfg.keep_policy}: nowhere to write the kept policy; pass --kept-policy FILE or --save CKPT"
        )


def _eval_config(args: argparse.Namespace) -> tuple:
    """(config, policy file path or None) for ``esper eval``; usage errors before torch."""
    source = getattr(args, "policy", None) or getattr(args, "like", None)
    flag = "--policy" if getattr(args, "policy", None) else "--like"
    if source and not Path(source).is_file():
        raise UsageError(f"{flag}: {source} does not exist")
    file_values = {}
    if getattr(args, "config", None):
        if source:
            raise UsageError("--config and --like: pass one (both give the training settings)")
        try:
            file_values = read_config_file(args.config)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        file_values = {k: v for k, v in file_values.items() if k not in ("n_envs", "episodes", "devices", "save", "resume")}
    overrides = {"devices": args.devices, "data_dir": args.data_dir, "quiet": True if args.quiet else None}
    try:
        cfg = build_config(args.mode, file_values, overrides)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if cfg.devices:
        precheck_devices(cfg.devices)
    return cfg, source, flag


def _eval(args: argparse.Namespace) -> int:
    cfg, source, flag = _eval_config(args)
    import time

    from parallel_core.devices import DeviceError, visible_devices

    from .checkpoint import CheckpointError, load_policy
    from .config import training_settings
    from .kasmina.blueprints import BlueprintError
    from .selection import VAL_FIRST_EPISODE, evaluate, held_out_seed
    from .tolaria.tasks import TaskError

    policy = None
    try:
        if source:
            policy = load_policy(source, flag)
            settings = {**policy["config"], **({"data_dir": args.data_dir} if args.data_dir else {})}
            cfg = build_config(args.mode, settings, {"devices": cfg.devices, "quiet": cfg.quiet})
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    except ConfigError as exc:
        raise UsageError(f"{flag}: {source} holds settings this version refuses ({exc})") from None
    except OSError as exc:
        raise CliError(f"{flag}: cannot read {source}: {exc.strerror or exc}") from None
    seed = args.seed if args.seed is not None else held_out_seed(cfg.seed)
    train_seed = cfg.seed
    cfg.seed, cfg.episodes = seed, args.episodes
    cfg.n_envs = args.n_envs or args.episodes
    cfg.telemetry_dir, cfg.tensorboard, cfg.save, cfg.resume = None, False, None, None
    if smoke_mode():
        _smoke(cfg)
    greedy = getattr(args, "eval_policy", "greedy") == "greedy"
    log = (lambda s: None) if cfg.quiet else (lambda s: print(s, file=sys.stderr))
    if seed == train_seed and args.first_episode < VAL_FIRST_EPISODE:
        log(f"esper: warning: --seed {seed} is the training seed: these are training hosts, not held-out ones")
    t0 = time.perf_counter()
    try:
        stats = evaluate(cfg, policy["agent"] if policy and args.mode == "ppo" else None, greedy=greedy, first_episode=args.first_episode, log=log)
    except DeviceError as exc:
        raise UsageError(f"{exc} (visible devices: {', '.join(visible_devices())})") from None
    except (TaskError, BlueprintError) as exc:
        raise UsageError(str(exc)) from None
    except CheckpointError as exc:  # the policy does not fit the network its settings build
        raise UsageError(f"{flag}: {source}: {exc}") from None
    out = {
        "mode": args.mode,
        "policy": getattr(args, "policy", None),
        "like": getattr(args, "like", None),
        "kept": policy["kept"] if policy and getattr(args, "policy", None) else None,
        "eval_policy": ("greedy" if greedy else "sample") if args.mode == "ppo" else None,
        "task": cfg.task,
        "train_seed": train_seed,
        "seed": seed,
        "first_episode": args.first_episode,
        "max_epochs": cfg.max_epochs,
        **stats,
        "wall_s": time.perf_counter() - t0,
        "settings": training_settings(cfg),
    }
    emit_json(out)
    return 0


def _validate_telemetry(path: str) -> int:
    from .telemetry import validate_file

    try:
        n, errors = validate_file(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    for e in errors[:20]:
        print(f"{path}: {e}", file=sys.stderr)
    emit_json({"file": path, "records": n, "valid": not errors, "errors": len(errors)})
    return 1 if errors else 0


def _plot(path: str, output: str | None) -> int:
    if not Path(path).is_file():
        raise UsageError(f"cannot read {path}: no such file")
    out = Path(output) if output else Path(path).with_suffix(".png")
    _check_output_dir("--output", str(out.parent))
    from .plot import PlotError, plot_telemetry

    try:
        info = plot_telemetry(path, out)
    except PlotError as exc:
        raise UsageError(str(exc)) from None
    emit_json(info)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        argv = list(DEFAULT_JOB)
    parser = build_parser()

    def body() -> int:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if args.command == "telemetry":
            if args.action == "validate":
                return _validate_telemetry(args.file)
            return _plot(args.file, args.output)
        if args.command == "eval":
            return _eval(args)
        return _train(args)

    return run_cli(PROG, body, interrupted="interrupted; telemetry and checkpoints written so far are intact")


if __name__ == "__main__":
    sys.exit(main())

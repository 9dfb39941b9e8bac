"""Command-line entry point: ``esper train {ppo,heuristic,fixed} ...`` and ``esper telemetry {validate,plot} FILE``.

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


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Morphogenetic training steered by PPO (or a heuristic) across devices.",
        epilog=EXAMPLES,
    )
    sub = parser.add_subparsers(dest="command", parser_class=ArgumentParser)
    train = sub.add_parser("train", help="train a controller", epilog=EXAMPLES)
    modes = train.add_subparsers(dest="mode", required=True, parser_class=ArgumentParser)
    for mode, help_ in (
        ("ppo", "learn a growth policy with PPO"),
        ("heuristic", "run the heuristic baseline controller"),
        ("fixed", "train the fixed host (no growth): the baseline growth must beat"),
    ):
        _train_flags(modes.add_parser(mode, help=help_, epilog=EXAMPLES), mode)
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
        return _train(args)

    return run_cli(PROG, body, interrupted="interrupted; telemetry and checkpoints written so far are intact")


if __name__ == "__main__":
    sys.exit(main())

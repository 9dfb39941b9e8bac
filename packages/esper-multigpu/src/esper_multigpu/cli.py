"""Command-line entry point: ``esper train {ppo,heuristic} ...`` and ``esper telemetry validate FILE``.

With no arguments ``esper`` runs a small demo job: ``esper train ppo --n-envs 2 --episodes 2
--max-epochs 12`` on the digits task, on CUDA if present, else the CPU (about 30 s on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys

from parallel_core.devices import DeviceError, visible_devices

from .checkpoint import CheckpointError
from .config import ConfigError, build_config, read_config_file
from .kasmina.blueprints import BlueprintError
from .kasmina.host import SLOT_NAMES
from .tolaria.tasks import TASKS, TaskError

DEFAULT_JOB = ("train", "ppo", "--n-envs", "2", "--episodes", "2", "--max-epochs", "12")

EXAMPLES = """\
examples:
  esper                                                     # demo: train ppo, 2 envs x 12 epochs, digits
  esper train heuristic --slots early mid late               # the heuristic baseline
  esper train ppo --devices cpu --episodes 1 --max-epochs 10
  esper train ppo --devices cuda:0 cuda:1 --n-envs 8 --episodes 64 --amp bf16 --save ckpt.pt
  esper train ppo --resume ckpt.pt --save ckpt.pt --episodes 128
  esper train ppo --task cifar10 --data-dir ~/data --devices cuda:0
  esper telemetry validate esper-telemetry/ppo.jsonl
"""


def _train_flags(p: argparse.ArgumentParser, mode: str) -> None:
    g = p.add_argument_group("run")
    g.add_argument(
        "--config",
        metavar="FILE",
        help="YAML/JSON config; unknown keys are errors; flags override it",
    )
    g.add_argument(
        "--task",
        choices=TASKS,
        help="digits (default, built in), cifar10 (needs --data-dir), synthetic",
    )
    g.add_argument(
        "--data-dir", help="folder holding cifar-10-batches-py/ (never downloaded at run time)"
    )
    g.add_argument(
        "--devices",
        nargs="+",
        metavar="DEV",
        help="e.g. cpu | cuda:0 cuda:1 | cpu cpu (default: cuda:0 if present, else cpu)",
    )
    g.add_argument(
        "--device-strategy",
        choices=("round_robin", "balanced"),
        help="how envs are dealt to devices",
    )
    g.add_argument(
        "--n-envs",
        type=int,
        help=f"environments run at once (default {'1' if mode == 'heuristic' else '4'})",
    )
    g.add_argument(
        "--episodes",
        type=int,
        help=f"total episodes (default {'1' if mode == 'heuristic' else '4'})",
    )
    g.add_argument("--max-epochs", type=int, help="epochs per episode (default 25)")
    g.add_argument(
        "--slots", nargs="+", choices=SLOT_NAMES, help="enabled slots (default: early mid late)"
    )
    g.add_argument(
        "--amp",
        choices=("off", "bf16", "fp16"),
        help="mixed precision on CUDA envs (no-op with a warning on cpu)",
    )
    g.add_argument("--seed", type=int, help="root seed (default 42)")
    g.add_argument(
        "--batch-size", type=int, help="minibatch size of the host training (default 64)"
    )
    g.add_argument("--width", type=int, help="host width: channels of the first stage (default 16)")
    g.add_argument(
        "--cpu-threads",
        type=int,
        help="torch threads per CPU device group (default 1; use --devices cpu cpu for parallel CPU envs)",
    )
    g.add_argument("--telemetry-dir", help=f"where {mode}.jsonl goes (default esper-telemetry)")
    g.add_argument("--no-telemetry", action="store_true", help="write no telemetry file")
    g.add_argument("--quiet", action="store_true", help="no progress bar or per-batch lines")
    if mode == "ppo":
        q = p.add_argument_group("ppo")
        q.add_argument(
            "--policy-device", help="device of the policy network (default: the first of --devices)"
        )
        q.add_argument("--lr", type=float, help="policy learning rate (default 1e-3)")
        q.add_argument(
            "--save", metavar="CKPT", help="save the policy after every batch (atomically)"
        )
        q.add_argument(
            "--resume", metavar="CKPT", help="continue from a checkpoint up to --episodes in total"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esper",
        description="Morphogenetic training steered by PPO (or a heuristic) across devices.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    train = sub.add_parser(
        "train",
        help="train a controller",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = train.add_subparsers(dest="mode", required=True)
    for mode, help_ in (
        ("ppo", "learn a growth policy with PPO"),
        ("heuristic", "run the heuristic baseline controller"),
    ):
        p = modes.add_parser(
            mode, help=help_, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        _train_flags(p, mode)
    tel = sub.add_parser("telemetry", help="telemetry tools")
    tsub = tel.add_subparsers(dest="action", required=True)
    v = tsub.add_parser("validate", help="check a telemetry JSONL file against its schema")
    v.add_argument("file")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    o = {
        k: getattr(args, k, None)
        for k in (
            "task",
            "data_dir",
            "devices",
            "device_strategy",
            "n_envs",
            "episodes",
            "max_epochs",
            "slots",
            "amp",
            "seed",
            "cpu_threads",
            "telemetry_dir",
            "policy_device",
            "save",
            "resume",
        )
    }
    o["quiet"] = True if args.quiet else None
    env = {
        k: getattr(args, k) for k in ("batch_size", "width") if getattr(args, k, None) is not None
    }
    o["env"] = env or None
    o["ppo"] = {"lr": args.lr} if getattr(args, "lr", None) is not None else None
    return o


def _validate_telemetry(path: str) -> int:
    from .telemetry import validate_file

    try:
        n, errors = validate_file(path)
    except OSError as exc:
        print(f"esper: error: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    for e in errors[:20]:
        print(f"{path}: {e}", file=sys.stderr)
    print(json.dumps({"file": path, "records": n, "valid": not errors, "errors": len(errors)}))
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        argv = list(DEFAULT_JOB)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "telemetry":
        return _validate_telemetry(args.file)

    from .train import run_training

    try:
        file_values = read_config_file(args.config) if args.config else {}
        cfg = build_config(args.mode, file_values, _overrides(args))
        if args.no_telemetry:
            cfg.telemetry_dir = None
        summary, _ = run_training(cfg)
    except DeviceError as exc:
        print(
            f"esper: error: {exc} (visible devices: {', '.join(visible_devices())})",
            file=sys.stderr,
        )
        return 2
    except (ConfigError, TaskError, CheckpointError, BlueprintError) as exc:
        print(f"esper: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an unwritable --telemetry-dir or --save path
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"esper: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("esper: interrupted; finished files are intact", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

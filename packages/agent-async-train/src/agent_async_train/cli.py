"""``agent-train``: train independent multi-agent DQN learners, evaluate checkpoints.

A thin shell: parse flags, build a ``Config``, call ``run.train`` or
``run.evaluate_checkpoint``, print the JSON result on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import Config, apply_mapping, load_file, parse_override, set_key, validate
from .errors import CheckpointError, ConfigError
from .games import GAMES, GameError, resolve_factory

EXAMPLES = """\
examples:
  agent-train                                   # small default job: gemgrid, 4 agents
  agent-train run gemgrid --agents 4 --epochs 20 --async-learning --parallel-actions
  agent-train run gemgrid --config cfg.yaml dqn.lr=5e-4 parallel.replay_ratio=0.5
  agent-train run --resume runs/gemgrid-20260101-120000/checkpoint.pt --epochs 40
  agent-train evaluate runs/gemgrid-20260101-120000/checkpoint.pt --episodes 50
  agent-train run mypkg.envs:make_parallel_env game.options='{n: 3}'   # your own game / PettingZoo env
"""


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-train",
        description="Independent multi-agent DQN learners with batched acting, parallel training "
        "and a background learner thread.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser(
        "run",
        help="train agents (default command)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "args",
        nargs="*",
        metavar="[GAME] [KEY=VALUE ...]",
        help=f"game name ({', '.join(GAMES)} or module:factory) and config overrides like dqn.lr=5e-4",
    )
    run.add_argument(
        "--config", help="YAML or TOML config file with sections game, dqn, parallel, run"
    )
    run.add_argument("--agents", type=int, help="number of agents (game.agents)")
    run.add_argument("--epochs", type=int, help="number of epochs (run.epochs)")
    run.add_argument("--seed", type=int, help="run seed (run.seed)")
    run.add_argument("--out", help="run directory (default runs/<game>-<time>)")
    run.add_argument("--resume", metavar="CHECKPOINT", help="continue the run saved in CHECKPOINT")
    run.add_argument(
        "--parallel-actions", action="store_true", help="one batched forward for all agents"
    )
    run.add_argument(
        "--parallel-training", action="store_true", help="train all agents concurrently"
    )
    run.add_argument("--async-learning", action="store_true", help="background learner thread")
    run.add_argument("--all-parallel", action="store_true", help="all three of the above")
    run.add_argument(
        "--workers", type=int, help="threads for parallel training (parallel.num_workers)"
    )
    run.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard event files")
    run.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")

    ev = sub.add_parser("evaluate", help="play greedy episodes from a checkpoint")
    ev.add_argument("checkpoint")
    ev.add_argument("--episodes", type=int, default=20, help="greedy episodes (default 20)")
    ev.add_argument(
        "--execution", choices=["simultaneous", "sequential"], help="override the move execution"
    )
    ev.add_argument("--quiet", action="store_true")

    sub.add_parser("games", help="list the built-in games")
    return parser


def _config_from_args(ns: argparse.Namespace) -> tuple[Config, dict | None]:
    """Defaults <- checkpoint or config file <- flags <- KEY=VALUE overrides."""
    game, overrides = None, []
    for item in ns.args:
        if "=" in item:
            overrides.append(parse_override(item))
        elif game is None:
            game = item
        else:
            raise UsageError(
                f"unexpected argument {item!r}: give one game name, then key=value overrides"
            )
    state = None
    if ns.resume:
        from . import checkpoint

        state = checkpoint.load(ns.resume)
        cfg = checkpoint.config_of(state)
        frozen = {s: dict(getattr(cfg, s).__dict__) for s in ("game", "dqn")}
        if game is not None and game != cfg.game.name:
            raise UsageError(f"the checkpoint trains {cfg.game.name!r}, not {game!r}")
    else:
        cfg = Config()
        if ns.config:
            apply_mapping(cfg, load_file(ns.config))
        if game is not None:
            cfg.game.name = game
    flags = {
        "game.agents": ns.agents,
        "run.epochs": ns.epochs,
        "run.seed": ns.seed,
        "run.out": ns.out,
        "parallel.num_workers": ns.workers,
    }
    for key, value in flags.items():
        if value is not None:
            set_key(cfg, key, value)
    p = cfg.parallel
    p.parallel_actions |= ns.parallel_actions or ns.all_parallel
    p.parallel_training |= ns.parallel_training or ns.all_parallel
    p.async_learning |= ns.async_learning or ns.all_parallel
    if ns.no_tensorboard:
        cfg.run.tensorboard = False
    for key, value in overrides:
        set_key(cfg, key, value)
    if state is not None:
        for section, before in frozen.items():
            after = getattr(cfg, section).__dict__
            changed = [k for k in before if before[k] != after[k]]
            if changed:
                raise UsageError(
                    f"cannot change {section}.{changed[0]} when resuming; start a new run instead"
                )
    return cfg, state


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        argv = ["run"]  # no arguments: the small default job
    parser = build_parser()
    if argv[0] not in ("run", "evaluate", "games", "-h", "--help"):
        argv = ["run", *argv]  # `agent-train gemgrid --epochs 5` means `agent-train run ...`
    # Overrides may follow options (`run gemgrid --epochs 5 dqn.lr=1e-3`), which plain
    # parse_args rejects for a nargs="*" positional: collect the leftover positionals here.
    ns, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or ns.command != "run"]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if ns.command == "run":
        ns.args = [*ns.args, *extra]
    try:
        if ns.command == "games":
            for name in GAMES:
                print(name)
            return 0
        if ns.command == "evaluate":
            from .run import evaluate_checkpoint

            if ns.episodes < 1:
                raise UsageError("--episodes must be >= 1")
            result = evaluate_checkpoint(ns.checkpoint, ns.episodes, ns.execution)
            print(json.dumps(result, indent=2))
            if not ns.quiet:
                print(
                    f"greedy {result['greedy_score']:.2f} vs random {result['random_score']:.2f} "
                    f"gems per agent per episode over {ns.episodes} episodes",
                    file=sys.stderr,
                )
            return 0
        cfg, state = _config_from_args(ns)
        validate(cfg)
        resolve_factory(cfg.game.name)  # fail fast on a bad game name, before importing torch
        from .run import train

        summary = train(cfg, resume_state=state, resume_path=ns.resume, quiet=ns.quiet)
        print(json.dumps(summary, indent=2))
        if not ns.quiet:
            print(
                f"final greedy score {summary['greedy_score']:.2f} gems per agent per episode "
                f"(random play {summary['random_score']:.2f}) in {summary['wall_s']:.1f} s; "
                f"logs in {summary['run_dir']}",
                file=sys.stderr,
            )
        return 0
    except (UsageError, ConfigError, GameError, CheckpointError) as err:
        print(f"agent-train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("agent-train: interrupted; the last checkpoint is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

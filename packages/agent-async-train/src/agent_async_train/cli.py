"""``agent-train``: train independent multi-agent learners, evaluate checkpoints.

A thin shell over ``run.train`` / ``run.evaluate_checkpoint`` (GemGrid, PettingZoo games)
and ``sorrel_run`` (sorrel's own examples), under the shared convention of
``parallel_core.cli``: usage errors are one line and exit 2, before torch is imported.
"""

from __future__ import annotations

import argparse
import sys

from parallel_core.cli import (
    ArgumentParser,
    CliError,
    UsageError,
    add_quiet_flag,
    emit_json,
    run_cli,
    smoke_mode,
)

from .config import Config, apply_mapping, load_file, parse_int, parse_override, set_key, validate
from .errors import CheckpointError, ConfigError, GameError, LearnerError
from .games import GAMES, SORREL_GAMES, SORREL_PREFIX, check_game_name, is_sorrel

PROG = "agent-train"

EXAMPLES = """\
examples:
  agent-train                                   # small default job: gemgrid, 4 agents
  agent-train run gemgrid --agents 4 --epochs 20 --async-learning --parallel-actions
  agent-train run gemgrid dqn.lr=5e-4 dqn.buffer_size=1e4 parallel.replay_ratio=0.5
  agent-train run gemgrid --agents 16 --all-parallel --device cuda:0   # act and learn on a GPU
  agent-train run sorrel:treasurehunt --epochs 50 --out runs/th     # sorrel's own game and models
  agent-train run --resume runs/th/checkpoint.pt --epochs 80
  agent-train evaluate runs/th/checkpoint.pt --episodes 10
  agent-train run mypkg.envs:make_parallel_env game.options='{n: 3}'   # your own game / PettingZoo env
"""

# PARALLEL_RL_SMOKE=1: documented commands finish in seconds (new epochs, episodes, evals).
SMOKE_EPOCHS, SMOKE_EPISODES, SMOKE_EVAL, SMOKE_SORREL_TURNS = 2, 2, 2, 10
SMOKE_SORREL_WORLD = 9  # fresh sorrel runs: at most 9x9 (sorrel's Python observation loops)


def _int_arg(text: str) -> int:
    try:
        return parse_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer (1e3 works), got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Independent multi-agent learners (own buffer, network, optimiser each) "
        "with batched acting, parallel training and a background learner; GemGrid, "
        "PettingZoo games and sorrel's own examples.",
        epilog=EXAMPLES,
    )
    sub = parser.add_subparsers(dest="command", parser_class=ArgumentParser)
    run = sub.add_parser("run", help="train agents (default command)", epilog=EXAMPLES)
    games = ", ".join([*GAMES, *(SORREL_PREFIX + g for g in SORREL_GAMES)])
    run.add_argument(
        "args",
        nargs="*",
        metavar="[GAME] [KEY=VALUE ...]",
        help=f"game ({games} or module:factory) and config overrides like dqn.lr=5e-4",
    )
    run.add_argument(
        "--config", help="YAML or TOML config file with sections game, dqn, parallel, run"
    )
    run.add_argument(
        "--agents", type=_int_arg, help="number of agents (game.agents); games that fix it refuse others"
    )
    run.add_argument("--epochs", type=_int_arg, help="number of epochs (run.epochs)")
    run.add_argument("--seed", type=_int_arg, help="run seed (run.seed)")
    run.add_argument("--out", help="run directory (default runs/<game>-<time>)")
    run.add_argument(
        "--overwrite", action="store_true", help="replace a run already saved in --out"
    )
    run.add_argument("--resume", metavar="CHECKPOINT", help="continue the run saved in CHECKPOINT")
    run.add_argument(
        "--parallel-actions", action="store_true", help="one batched forward for all agents"
    )
    run.add_argument(
        "--parallel-training", action="store_true", help="train all agents concurrently"
    )
    run.add_argument(
        "--async-learning", action="store_true", help="background learner beside collection"
    )
    run.add_argument("--all-parallel", action="store_true", help="all three of the above")
    run.add_argument(
        "--workers", type=_int_arg, help="threads for parallel training (parallel.num_workers)"
    )
    run.add_argument(
        "--device", help="where networks act and learn: cpu (default) or cuda:N (run.device)"
    )
    run.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard event files")
    add_quiet_flag(run)

    ev = sub.add_parser("evaluate", help="play greedy episodes from a checkpoint", epilog=EXAMPLES)
    ev.add_argument("checkpoint")
    ev.add_argument(
        "--episodes", type=_int_arg, default=20, help="greedy episodes (default 20)"
    )
    ev.add_argument(
        "--execution", choices=["simultaneous", "sequential"], help="override the move execution"
    )
    ev.add_argument(
        "--record", metavar="GIF", help="also save the first greedy episode as an animated GIF"
    )
    ev.add_argument("--device", help="device to evaluate on (default: the run's own run.device)")
    add_quiet_flag(ev)

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
        from . import checkpoint  # torch: only once the arguments are known to be usable

        state = checkpoint.load(ns.resume)
        cfg = checkpoint.config_of(state)
        frozen = {s: getattr(cfg, s).model_dump() for s in ("game", "dqn")}
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
        "run.device": ns.device,
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
            after = getattr(cfg, section).model_dump()
            changed = [k for k in before if before[k] != after[k]]
            if changed:
                raise UsageError(
                    f"cannot change {section}.{changed[0]} when resuming; start a new run instead"
                )
    if smoke_mode():
        r = cfg.run
        start = int(state["epoch"]) if state is not None else 0
        r.epochs = min(r.epochs, start + SMOKE_EPOCHS)
        r.episodes_per_epoch = min(r.episodes_per_epoch, SMOKE_EPISODES)
        r.eval_episodes = min(r.eval_episodes, SMOKE_EVAL)
        if is_sorrel(cfg.game.name):  # sorrel episodes are long: shorter ones in smoke mode
            opts = dict(cfg.game.options)
            exp = dict(opts.get("experiment") or {})
            exp["max_turns"] = min(int(exp.get("max_turns", SMOKE_SORREL_TURNS)), SMOKE_SORREL_TURNS)
            opts["experiment"] = exp
            if state is None:  # a resumed run keeps the world its checkpoint was trained on
                world = dict(opts.get("world") or {})
                for key in ("height", "width"):
                    world[key] = min(int(world.get(key, SMOKE_SORREL_WORLD)), SMOKE_SORREL_WORLD)
                opts["world"] = world
            cfg.game.options = opts
    return cfg, state


def _run(ns: argparse.Namespace) -> int:
    cfg, state = _config_from_args(ns)
    validate(cfg)
    check_game_name(cfg.game.name)  # fail fast on a bad game name, before importing torch
    if is_sorrel(cfg.game.name):
        from .sorrel_run import train
    else:
        from .run import train
    from .learners.dqn import skip_optimizer_dynamo_import

    skip_optimizer_dynamo_import()  # seconds of CPU per process (and per spawned learner)
    summary = train(
        cfg, resume_state=state, resume_path=ns.resume, quiet=ns.quiet, overwrite=ns.overwrite
    )
    emit_json(summary)
    if not ns.quiet:
        print(
            f"final greedy score {summary['greedy_score']:.2f} {summary['reward_name']} per agent "
            f"per episode (random play {summary['random_score']:.2f}) in {summary['wall_s']:.1f} s; "
            f"logs in {summary['run_dir']}",
            file=sys.stderr,
        )
    return 0


def _evaluate(ns: argparse.Namespace) -> int:
    if ns.episodes < 1:
        raise UsageError("--episodes must be >= 1")
    episodes = min(ns.episodes, SMOKE_EVAL) if smoke_mode() else ns.episodes
    if ns.device is not None:
        validate(Config.from_dict({"run": {"device": ns.device}}))  # torch-free check first
    from . import checkpoint

    state = checkpoint.load(ns.checkpoint)
    if ns.device is not None:
        state["config"]["run"]["device"] = ns.device
    if is_sorrel(checkpoint.config_of(state).game.name):
        from .sorrel_run import evaluate_checkpoint
    else:
        from .run import evaluate_checkpoint
    if ns.record is not None:
        from pathlib import Path

        target = Path(ns.record)
        if target.suffix.lower() != ".gif":
            raise UsageError(f"--record {ns.record!r}: give a .gif file name")
        if not target.parent.is_dir() and str(target.parent) not in ("", "."):
            raise UsageError(f"--record {ns.record!r}: directory {str(target.parent)!r} does not exist")
    from .learners.dqn import skip_optimizer_dynamo_import

    skip_optimizer_dynamo_import()
    result = evaluate_checkpoint(ns.checkpoint, episodes, ns.execution, state=state, record=ns.record)
    emit_json(result)
    if not ns.quiet:
        print(
            f"greedy {result['greedy_score']:.2f} vs random {result['random_score']:.2f} "
            f"{result['reward_name']} per agent per episode over {episodes} episodes",
            file=sys.stderr,
        )
    return 0


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

    def body() -> int:
        try:
            if ns.command == "games":
                for name in [*GAMES, *(SORREL_PREFIX + g for g in SORREL_GAMES)]:
                    print(name)
                return 0
            if ns.command == "evaluate":
                return _evaluate(ns)
            return _run(ns)
        except (ConfigError, GameError, CheckpointError) as err:
            raise UsageError(err) from err
        except LearnerError as err:
            raise CliError(err) from err

    return run_cli(PROG, body, interrupted="interrupted; the last checkpoint is intact")


if __name__ == "__main__":
    sys.exit(main())

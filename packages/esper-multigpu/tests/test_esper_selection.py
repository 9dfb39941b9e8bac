"""The kept policy (--keep-policy last/val/best) and `esper eval` on held-out hosts."""

import json

import pytest
import torch

from esper_multigpu.cli import main
from esper_multigpu.config import build_config
from esper_multigpu.selection import VAL_FIRST_EPISODE, choose_validated, evaluate, held_out_seed
from esper_multigpu.telemetry import read_records, validate_file
from esper_multigpu.train import run_training

QUIET = dict(log=lambda s: None)


def test_choose_validated_best_return_then_fewer_params_then_later():
    c = lambda batch, ret, params: {"batch": batch, "return": ret, "added_params": params}  # noqa: E731
    assert choose_validated([c(2, 0.01, 0), c(4, 0.06, 4656), c(6, 0.03, 1176)])["batch"] == 4
    # the same return (to 1e-6): the cheaper policy; a policy that grows nothing ties only with another
    assert choose_validated([c(2, 0.05, 4656), c(4, 0.05 + 1e-9, 1176)])["batch"] == 4
    assert choose_validated([c(2, 0.0, 0), c(4, 0.0, 0), c(6, -0.01, 300)])["batch"] == 4
    with pytest.raises(ValueError):
        choose_validated([])
    # validation hosts: the training root seed's episodes from 1e6; held-out: another root seed
    assert VAL_FIRST_EPISODE >= 1_000_000 and held_out_seed(0) == 10_000


def _net(state):
    return [v.clone() for v in state["net"].values()]


def test_val_keeps_the_best_validated_policy_without_changing_training_and_across_resume(tiny_config, tmp_path):
    """Validation runs beside training without changing it (same returns, same last
    policy); the kept file holds the policy chosen by choose_validated among the scores,
    loads with weights_only and matches the policy after that many updates; a run
    resumed half way keeps the same policy from the same candidates."""
    val = dict(n_envs=1, max_epochs=3, keep_policy="val", val_every=1, val_episodes=2)
    snapshots = {}  # the plain run's policy after each number of updates
    plain, _ = run_training(
        tiny_config(n_envs=1, episodes=4, max_epochs=3),
        on_batch=lambda rec, tr: snapshots.__setitem__(rec["batch"] + 1, _net(tr.agent.state_dict())), **QUIET,
    )  # fmt: skip
    kept_file, tel = tmp_path / "kept.pt", tmp_path / "tel"
    full, trainer = run_training(
        tiny_config(episodes=4, kept_policy=str(kept_file), telemetry_dir=str(tel), **val), **QUIET
    )
    assert [b["mean_return"] for b in full["batches"]] == [b["mean_return"] for b in plain["batches"]]
    assert all(torch.equal(a, b) for a, b in zip(_net(trainer.agent.state_dict()), snapshots[4]))
    info = full["kept_policy"]
    scores = info["validation"]["scores"]
    assert [s["batch"] for s in scores] == [1, 2, 3, 4] and info["rule"] == "val"
    assert info["batch"] == choose_validated(scores)["batch"] and info["file"] == str(kept_file)
    saved = torch.load(kept_file, weights_only=True)
    assert saved["kept"]["batch"] == info["batch"] and saved["config"]["seed"] == 42
    assert all(torch.equal(a, b) for a, b in zip(_net(saved["agent"]), snapshots[info["batch"]]))
    # telemetry: one validation record per candidate and the kept one at the end
    assert validate_file(tel / "ppo.jsonl")[1] == []
    recs = read_records(tel / "ppo.jsonl")
    assert [r["batch"] for r in recs if r["type"] == "validation"] == [1, 2, 3, 4]
    assert [r["batch"] for r in recs if r["type"] == "kept"] == [info["batch"]]
    # interrupted after 2 episodes, resumed to 4: the same candidates, the same kept policy
    ckpt, kept2 = tmp_path / "ck.pt", tmp_path / "ck.kept.pt"
    run_training(tiny_config(episodes=2, save=str(ckpt), **val), **QUIET)
    assert kept2.exists()  # the default name beside --save
    resumed, _ = run_training(tiny_config(episodes=4, save=str(ckpt), resume=str(ckpt), **val), **QUIET)
    assert resumed["kept_policy"]["validation"]["scores"] == scores
    assert resumed["kept_policy"]["batch"] == info["batch"]
    assert all(torch.equal(a, b) for a, b in zip(_net(torch.load(kept2, weights_only=True)["agent"]), _net(saved["agent"])))
    # the checkpoint keeps the last policy (what --resume continues from)
    last = torch.load(ckpt, weights_only=True)
    assert last["next_batch"] == 4 and all(torch.equal(a, b) for a, b in zip(_net(last["agent"]), snapshots[4]))


def test_best_keeps_the_policy_that_earned_the_best_training_batch(tiny_config, tmp_path):
    snapshots = {0: None}
    summary, _ = run_training(
        tiny_config(n_envs=1, episodes=3, max_epochs=3, keep_policy="best", kept_policy=str(tmp_path / "b.pt")),
        on_batch=lambda rec, tr: snapshots.__setitem__(rec["batch"] + 1, _net(tr.agent.state_dict())), **QUIET,
    )  # fmt: skip
    returns = [b["mean_return"] for b in summary["batches"]]
    best = max(range(1, 3), key=lambda b: (returns[b], -b))  # batch 0's policy is untrained: no candidate
    assert summary["kept_policy"]["batch"] == best and summary["kept_policy"]["return"] == returns[best]
    saved = torch.load(tmp_path / "b.pt", weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(_net(saved["agent"]), snapshots[best]))


TINY = ["--task", "synthetic", "--max-epochs", "3", "--width", "8", "--devices", "cpu", "--no-telemetry"]


def test_cli_train_keeps_a_policy_and_eval_equals_the_in_process_evaluation(tmp_path, capsys):
    ckpt = tmp_path / "ck.pt"
    cfgfile = tmp_path / "c.yaml"
    cfgfile.write_text("env: {train_batches: 1}\nreward: {rent: 0.005}\n")  # settings the policy file must carry
    args = ["train", "ppo", "--config", str(cfgfile), *TINY, "--n-envs", "1", "--episodes", "2", "--save", str(ckpt),
            "--val-episodes", "2", "--val-every", "1"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    kept = out["kept_policy"]
    assert kept["rule"] == "val" and kept["file"] == str(tmp_path / "ck.kept.pt")  # the default with --save
    assert [s["batch"] for s in kept["validation"]["scores"]] == [1, 2] and ckpt.exists()
    assert main(["eval", "ppo", "--policy", kept["file"], "--episodes", "2", "--seed", "7", "--quiet"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["kept"]["batch"] == kept["batch"] and ev["seed"] == 7 and ev["episodes"] == 2
    policy = torch.load(kept["file"], weights_only=True)
    cfg = build_config("ppo", policy["config"], dict(devices=["cpu"], n_envs=2, episodes=2, seed=7, telemetry_dir=None, quiet=True))
    assert cfg.reward.rent == 0.005 and cfg.env.train_batches == 1
    ref = evaluate(cfg, policy["agent"])
    assert {k: ev[k] for k in ref} == ref
    # default seed: the held-out root of the training seed; the checkpoint evaluates its last policy
    assert main(["eval", "ppo", "--policy", str(ckpt), "--episodes", "1", "--quiet"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["seed"] == held_out_seed(42) and ev["kept"] == {"rule": "last", "batch": 2}
    # the baselines on the same hosts, with the policy's settings
    assert main(["eval", "fixed", "--like", kept["file"], "--episodes", "1", "--quiet"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["seed"] == held_out_seed(42) and ev["added_params_mean"] == 0 and ev["settings"]["reward"]["rent"] == 0.005


def test_eval_of_a_garbage_policy_file_is_one_line_exit_2(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a policy")
    assert main(["eval", "ppo", "--policy", str(junk), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"esper: error: --policy: {junk} is not an esper policy file") and err.count("\n") == 1
    # torch's own text advises weights_only=False (running code from the file): not passed on
    assert "not a torch file" in err and "weights_only" not in err

import pytest

from esper_multigpu.config import TrainConfig, build_config


def tiny(mode: str = "ppo", **kw) -> TrainConfig:
    """A config small enough for unit tests: synthetic task, narrow host, few epochs, no files,
    and one optimisation step per epoch unless the caller passes ``env`` (what these tests
    prove, equal runs, resume, records, does not depend on how far the host trains)."""
    env = (
        dict(width=8, batch_size=64)
        if "env" in kw
        else dict(width=8, batch_size=64, train_batches=1)
    )
    env.update(kw.pop("env", {}))
    base = dict(
        task="synthetic",
        devices=["cpu"],
        n_envs=2,
        episodes=2,
        max_epochs=4,
        telemetry_dir=None,
        quiet=True,
        cpu_threads=1,
        env=env,
    )
    base.update(kw)
    return build_config(mode, {}, base)


@pytest.fixture
def tiny_config():
    """``tiny_config(mode="ppo", **overrides)`` -> a tiny :class:`TrainConfig`."""
    return tiny

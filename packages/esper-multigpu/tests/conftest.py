import pytest

from esper_multigpu.config import TrainConfig, build_config


def tiny(mode: str = "ppo", **kw) -> TrainConfig:
    """A config small enough for unit tests: synthetic task, narrow host, few epochs, no files."""
    env = dict(width=8, batch_size=64)
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

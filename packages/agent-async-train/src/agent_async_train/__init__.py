"""agent-async-train: independent multi-agent DQN learners with batched acting, parallel
training and a background learner thread.

Main entry points::

    from agent_async_train.config import Config
    from agent_async_train.loop import Experiment

    cfg = Config()
    cfg.parallel.async_learning = True
    ex = Experiment(cfg).start()
    for _ in range(cfg.run.epochs):
        print(ex.run_epoch())
    ex.close()
    print(ex.evaluate(episodes=20))

The CLI is ``agent-train`` (``agent_async_train.cli``); see docs/agent-async-train.md.
"""

__version__ = "0.1.0"

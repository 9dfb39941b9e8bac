"""An unchanged upstream EMPO MultiGrid env (multigrid_worlds/trivial.yaml) for --world FILE:make.

Needs upstream EMPO (github.com/mensch72/empo) at $EMPO_UPSTREAM and its dependencies.
"""
import os
import sys

UP = os.environ["EMPO_UPSTREAM"]
sys.path[:0] = [f"{UP}/src", f"{UP}/vendor/multigrid"]
import gymnasium  # noqa: E402

sys.modules.setdefault("gym", gymnasium)
from gym_multigrid.multigrid import MultiGridEnv  # noqa: E402


def make(max_steps=None):
    kw = {} if max_steps is None else {"max_steps": max_steps}
    return MultiGridEnv(config_file=f"{UP}/multigrid_worlds/trivial.yaml", **kw)

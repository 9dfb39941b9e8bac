"""Reference numbers of test_upstream_exact.py: upstream EMPO on the worlds of empo_test_worlds.py.

    python upstream_reference_script.py /path/to/empo-checkout out.json

Needs upstream's own dependencies (numpy, gymnasium, cloudpickle, tqdm, psutil, pyyaml,
scipy) in the interpreter that runs it; it is not run by the test suite.
"""
# Upstream's modules import only after its checkout is put on sys.path (and "gym" aliased).
# ruff: noqa: E402, I001
import json
import os
import sys

UPSTREAM = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [f"{UPSTREAM}/src", f"{UPSTREAM}/vendor/multigrid", HERE]
import gymnasium as gym
sys.modules["gym"] = gym
from empo.world_model import WorldModel
from empo.backward_induction import compute_human_policy_prior
import empo_test_worlds as W

def upstreamify(world):
    cls = type("Up" + type(world).__name__, (type(world), WorldModel), {
        "human_agent_indices": property(lambda self: self.__dict__["human_agent_indices"]),
        "robot_agent_indices": property(lambda self: self.__dict__["robot_agent_indices"]),
    })
    world.__class__ = cls
    return world

cases = {
    "durations": (W.make_duration_world, None, dict(beta_h=5.0, rho_h=0.3)),
    "goals_per_state": (W.make_goals_ahead_world, W.GoalsAhead, dict(beta_h=5.0, gamma_h=0.9)),
    "two_humans": (W.make_two_humans_world, None, dict(beta_h=5.0, gamma_h=0.9)),
}
out = {}
for name, (make, gen, kw) in cases.items():
    world = upstreamify(make())
    goals = gen() if gen else world.goal_generator()
    prior, Vh = compute_human_policy_prior(world, list(world.human_agent_indices), goals,
        return_Vh=True, quiet=True, use_float16=False, use_attainment_cache=False,
        min_free_memory_fraction=0.0, **kw)
    pol = prior.values
    rows = []
    for state in sorted(pol):
        for h in sorted(pol[state]):
            for g, p in pol[state][h].items():
                v = Vh.get(state, {}).get(h, {}).get(g, 0.0)
                rows.append([list(state), h, g.place, [round(float(x), 12) for x in p], round(float(v), 12)])
    out[name] = rows
    print(name, len(rows), file=sys.stderr)
json.dump(out, open(sys.argv[2], "w"))

"""The oracle: Phase 1 written one state, goal, action and outcome at a time in plain Python.

Independent of the package (own exploration, own order, own arithmetic); it reads only
the world-model protocol. Tests compare the vectorised solver against it, and the
benchmark times it to report the per-state speedup.
"""

from __future__ import annotations

import itertools
import math


def reference_prior(
    world,
    humans,
    goal_generator,
    believed=None,
    beta=10.0,
    gamma=None,
    rho=None,
    optimistic=False,
    max_states=None,
    timings=None,
):
    """Return ``(policy, values, goals)``; dicts keyed by ``(state, h, goal_index)``.

    ``timings`` (a dict) receives ``explore_s`` and ``phase1_s`` (backward induction only).
    """
    import time

    t0 = time.perf_counter()
    n = len(world.agents)
    nA = world.action_space.n
    robots = list(world.robot_agent_indices)
    if gamma is not None:
        rho = -math.log(gamma)
    rho = rho or 0.0
    world.reset()
    root = world.get_state()
    goals = {h: [g for g, *_ in goal_generator.generate(root, h)] for h in humans}
    joint = list(itertools.product(range(nA), repeat=n))

    # Exploration with memoised transitions; post-order DFS gives successors first.
    trans = {}
    order, seen = [], {root}
    stack = [(root, False)]
    while stack:
        s, expanded = stack.pop()
        if expanded:
            order.append(s)
            continue
        stack.append((s, True))
        if world.transition_probabilities(s, [0] * n) is None:
            trans[s] = None
            continue
        trans[s] = {a: world.transition_probabilities(s, list(a)) for a in joint}
        for outs in trans[s].values():
            for out in outs:
                if out[1] not in seen:
                    seen.add(out[1])
                    stack.append((out[1], False))
        if max_states and len(seen) > max_states:
            raise RuntimeError("too many states")

    t1 = time.perf_counter()
    V, P = {}, {}
    for s in order:
        for h in humans:
            for gi, g in enumerate(goals[h]):
                if trans[s] is None:
                    V[(s, h, gi)] = 0.0
                    continue
                if g.is_achieved(s):
                    P[(s, h, gi)] = [1.0] + [0.0] * (nA - 1)
                    V[(s, h, gi)] = 0.0
                    continue
                others = [i for i in range(n) if i != h and i not in robots]
                Q = []
                for a in range(nA):
                    if believed is None:
                        u = float(nA) ** -len(others)
                        profiles = [
                            (u, dict(zip(others, prof)))
                            for prof in itertools.product(range(nA), repeat=len(others))
                        ]
                    else:
                        profiles = [
                            (p, {i: prof[i] for i in others}) for p, prof in believed(s, h, a)
                        ]
                    q = 0.0
                    for u, prof in profiles:
                        best = None
                        for ar in itertools.product(range(nA), repeat=len(robots)):
                            actions = [0] * n
                            actions[h] = a
                            for i, x in prof.items():
                                actions[i] = x
                            for i, x in zip(robots, ar):
                                actions[i] = x
                            ev = 0.0
                            for out in trans[s][tuple(actions)]:
                                p, s2 = out[0], out[1]
                                dur = out[2] if len(out) > 2 else 1.0
                                if g.is_achieved(s2):
                                    y = 1.0
                                elif rho:
                                    y = math.exp(-rho * dur) * V[(s2, h, gi)]
                                else:
                                    y = V[(s2, h, gi)]
                                ev += p * y
                            if best is None:
                                best = ev
                            elif optimistic:
                                best = max(best, ev)
                            else:
                                best = min(best, ev)
                        q += u * best
                    Q.append(q)
                qmax = max(Q)
                if math.isinf(beta):
                    w = [1.0 if q == qmax else 0.0 for q in Q]
                else:
                    w = [math.exp(beta * (q - qmax)) for q in Q]
                tot = sum(w)
                pi = [x / tot for x in w]
                P[(s, h, gi)] = pi
                V[(s, h, gi)] = sum(p * q for p, q in zip(pi, Q))
    if timings is not None:
        timings["explore_s"] = t1 - t0
        timings["phase1_s"] = time.perf_counter() - t1
        timings["states"] = len(order)
    return P, V, goals

import numpy as np
import pytest

from cogames_parallel.policies import (
    PolicyError,
    PolicySpec,
    allocate_agents,
    label_policies,
    parse_policy_spec,
)
from cogames_parallel.policies.spec import validate_spec


@pytest.mark.parametrize(
    "text, expected",
    [
        ("random", PolicySpec("random")),
        ("greedy:3", PolicySpec("greedy", proportion=3.0)),
        ("greedy:0.5", PolicySpec("greedy", proportion=0.5)),
        ("my.pkg:Policy", PolicySpec("my.pkg:Policy")),
        ("my.pkg:Policy:2", PolicySpec("my.pkg:Policy", proportion=2.0)),
        (
            "class=busy,kw.work=100,proportion=2",
            PolicySpec("busy", proportion=2.0, kwargs=(("work", 100),)),
        ),
        (
            "class=mlp,data=w.pt,kw.sample=true,kw.name=x,kw.t=0.5",
            PolicySpec("mlp", data="w.pt", kwargs=(("sample", True), ("name", "x"), ("t", 0.5))),
        ),
    ],
)
def test_parse_policy_spec(text, expected):
    assert parse_policy_spec(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty policy spec"),
        ("class=", "has no class="),
        ("data=x.pt", "has no class="),
        ("class=a,class=b", "class given twice"),
        ("class=random,foo=1", "unknown key 'foo'"),
        ("class=random,proportion=abc", "proportion 'abc' is not a number"),
        ("class=random,proportion=0", "proportion must be > 0"),
        ("random:0", "proportion must be > 0"),
        ("random:-1", "proportion must be > 0"),
        ("greedy:x", "proportion 'x' is not a number"),
        ("class=random,kw.1x=2", "is not kw.<identifier>"),
        ("class=random,oops", "is not KEY=VALUE"),
    ],
)
def test_parse_policy_spec_errors(text, message):
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_policy_spec(text)


def test_labels_are_unique():
    specs = label_policies(
        [parse_policy_spec(s) for s in ["busy", "class=busy,kw.work=5", "random", "a.b:Cls"]]
    )
    assert [s.name for s in specs] == ["busy", "busy#2", "random", "Cls"]


def test_validate_spec_catches_bad_options_and_files():
    with pytest.raises(PolicyError, match="unexpected keyword argument 'zz'"):
        validate_spec(parse_policy_spec("class=greedy,kw.zz=1"))
    with pytest.raises(PolicyError, match="data file nope.pt does not exist"):
        validate_spec(parse_policy_spec("class=mlp,data=nope.pt"))
    with pytest.raises(PolicyError, match="unknown policy 'nosuch'"):
        validate_spec(parse_policy_spec("nosuch"))
    with pytest.raises(PolicyError, match="NoopPolicy takes no options, got kw.a"):
        validate_spec(parse_policy_spec("class=noop,kw.a=1"))
    validate_spec(parse_policy_spec("class=busy,kw.work=5"))


@pytest.mark.parametrize(
    "props, n, expected",
    [
        ([1, 1], 4, [2, 2]),
        ([1, 1, 1], 4, [2, 1, 1]),  # tie on remainders -> earlier policy
        ([1, 2], 4, [1, 3]),  # quotas 1.33 / 2.67 -> the larger remainder wins
        ([3, 1], 4, [3, 1]),
        ([1, 1], 1, [1, 0]),
        ([0.2, 0.3, 0.5], 7, [1, 2, 4]),  # 1.4, 2.1, 3.5 -> floors 1,2,3; +1 to 0.5
        ([5], 3, [3]),
    ],
)
def test_largest_remainder(props, n, expected):
    assert allocate_agents(props, n) == expected


def test_largest_remainder_always_sums_and_stays_within_one_of_quota():
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 6))
        props = list(rng.uniform(0.1, 5, size=k))
        n = int(rng.integers(0, 20))
        counts = allocate_agents(props, n)
        assert sum(counts) == n
        quotas = np.array(props) / sum(props) * n
        assert np.all(np.abs(np.array(counts) - quotas) < 1)


def test_allocate_rejects_bad_proportions():
    with pytest.raises(PolicyError):
        allocate_agents([], 3)
    with pytest.raises(PolicyError):
        allocate_agents([1, -1], 3)

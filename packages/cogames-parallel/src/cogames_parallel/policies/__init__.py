"""Policies: interfaces, built-ins, spec parsing and loading."""

from cogames_parallel.policies.base import (
    AgentPolicy,
    MultiAgentPolicy,
    PolicyEnvInfo,
    PolicyError,
    load_policy_data,
    register_policy,
    registered_policies,
)
from cogames_parallel.policies.spec import (
    PolicySpec,
    allocate_agents,
    build_policy,
    label_policies,
    parse_policy_spec,
    resolve_policy_class,
)

__all__ = [
    "AgentPolicy",
    "MultiAgentPolicy",
    "PolicyEnvInfo",
    "PolicyError",
    "PolicySpec",
    "allocate_agents",
    "build_policy",
    "label_policies",
    "load_policy_data",
    "parse_policy_spec",
    "register_policy",
    "registered_policies",
    "resolve_policy_class",
]

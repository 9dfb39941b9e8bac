"""cogames-parallel: parallel multi-agent policy evaluation (``cogames eval``).

Layers: ``missions`` and ``policies`` (the domain), ``tasks`` + ``rollout`` (the
algorithm: a precomputed task list and one serial episode), ``agent_workers`` and
``runners`` (the execution layer), ``summary``/``report`` (output), ``cli``.
"""

__version__ = "0.1.0"

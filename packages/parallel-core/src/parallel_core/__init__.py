"""parallel-core: the shared execution layer of parallel-rl.

- :mod:`parallel_core.mpi`: distributed context (MPI ranks or local), simulation mode
- :mod:`parallel_core.pools`: ordered ``parallel_map``, executor factory, start methods
- :mod:`parallel_core.budget`: the worker budget that nested levels split
- :mod:`parallel_core.devices`: device parsing, validation and mapping
- :mod:`parallel_core.progress`, :mod:`parallel_core.io`: progress bars, atomic writes
"""

from .budget import WorkerBudget, available_cores
from .io import atomic_write
from .mpi import DistributedContext, LocalContext, get_context, partition
from .pools import SerialExecutor, WorkerError, make_executor, parallel_map

__all__ = [
    "DistributedContext",
    "LocalContext",
    "SerialExecutor",
    "WorkerBudget",
    "WorkerError",
    "atomic_write",
    "available_cores",
    "get_context",
    "make_executor",
    "parallel_map",
    "partition",
]

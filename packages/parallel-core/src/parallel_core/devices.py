"""Device specs: parse, validate against what torch sees, and map work onto devices.

torch is imported lazily and only when a CUDA or MPS device is involved, so ``cpu``
works in an environment without torch.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import sys
from collections.abc import Sequence

from .mpi import partition

_SPEC = re.compile(r"^(cpu|cuda|mps)(?::(\d+))?$")


class DeviceError(ValueError):
    """A device that cannot be used; the message says what is visible instead."""


def _torch():
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def parse_device(spec: str, flag: str = "--devices") -> str:
    """Canonical form of a device spec: ``cpu``, ``cuda:N`` (``cuda`` means ``cuda:0``) or ``mps``.

    ``flag`` is the option named in the error's example.
    """
    match = _SPEC.match(str(spec).strip().lower())
    if match is None:
        raise DeviceError(f"unknown device {spec!r}: use cpu, cuda, cuda:N or mps (e.g. {flag} cuda:0)")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        return f"cuda:{int(index or 0)}"
    if index not in (None, "0"):
        raise DeviceError(f"device {spec!r} has no index {index}: there is one {kind} device")
    return kind


def cuda_device_count() -> int:
    torch = _torch()
    if torch is None:
        return 0
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def _mps_available() -> bool:
    torch = _torch()
    backends = getattr(torch, "backends", None) if torch is not None else None
    return bool(backends is not None and backends.mps.is_available())


def visible_devices() -> list[str]:
    """Every device this process can use, ``cpu`` first."""
    devices = ["cpu"] + [f"cuda:{i}" for i in range(cuda_device_count())]
    if _mps_available():
        devices.append("mps")
    return devices


def default_device() -> str:
    """``cuda:0`` when a CUDA device is visible, else ``cpu``."""
    return "cuda:0" if cuda_device_count() > 0 else "cpu"


def _cuda_hint() -> str:
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f" (CUDA_VISIBLE_DEVICES={mask!r} limits what is visible)" if mask is not None else ""


def validate_devices(specs: Sequence[str]) -> list[str]:
    """Parse every spec and check it exists here; raise :class:`DeviceError` on the first that does not."""
    if not specs:
        raise DeviceError("no device given: name at least one, e.g. --devices cpu")
    devices = [parse_device(s) for s in specs]
    count = None
    for device in devices:
        if device.startswith("cuda:"):
            if count is None:
                if _torch() is None:
                    raise DeviceError(f"requested {device} but torch is not installed")
                count = cuda_device_count()
            index = int(device.split(":")[1])
            if index >= count:
                visible = ", ".join(f"cuda:{i}" for i in range(count))
                if count == 0:
                    raise DeviceError(
                        f"requested {device} but no CUDA device is visible{_cuda_hint()}; "
                        "use --devices cpu"
                    )
                plural = "device is" if count == 1 else "devices are"
                raise DeviceError(
                    f"requested {device} but only {count} CUDA {plural} visible: {visible}{_cuda_hint()}"
                )
        elif device == "mps" and not _mps_available():
            raise DeviceError("requested mps but no Apple MPS device is available; use --devices cpu")
    return devices


def no_cuda_here() -> bool:
    """True when this machine certainly has no CUDA device, decided without importing torch.

    No NVIDIA driver (``/proc/driver/nvidia``, ``/dev/nvidia*``) and no ROCm (``/dev/kfd``)
    on Linux, or ``CUDA_VISIBLE_DEVICES`` hiding every device. Anything else is left to
    torch (:func:`validate_devices`) after the heavy import.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    if not sys.platform.startswith("linux"):
        return False
    driver = os.path.exists("/proc/driver/nvidia") or glob.glob("/dev/nvidia[0-9]*")
    return not driver and not os.path.exists("/dev/kfd")


def precheck_devices(specs: Sequence[str], flag: str = "--devices") -> list[str]:
    """Parse device specs and reject CUDA ones on a machine certainly without CUDA, torch-free.

    For CLIs that must answer a wrong ``--device`` in well under a second (before torch is
    imported); :func:`validate_devices` does the full check later. Raises :class:`DeviceError`
    with ``flag`` in the message.
    """
    try:
        devices = [parse_device(s, flag) for s in specs]
    except DeviceError as exc:
        raise DeviceError(f"{flag}: {exc}") from None
    cuda = [d for d in devices if d.startswith("cuda")]
    if cuda and no_cuda_here():
        raise DeviceError(
            f"requested {cuda[0]} but no CUDA device is visible; use {flag} cpu (visible devices: cpu)"
        )
    return devices


def map_to_devices(n_items: int, devices: Sequence[str], strategy: str = "round_robin") -> list[str]:
    """The device of each of ``n_items`` environments/workers.

    ``round_robin`` deals items out like cards (0->d0, 1->d1, 2->d0, ...); ``balanced``
    gives each device one contiguous block. Both leave device loads within one item.
    """
    if not devices:
        raise DeviceError("cannot map work onto an empty device list")
    if strategy == "round_robin":
        return [devices[i % len(devices)] for i in range(n_items)]
    if strategy == "balanced":
        mapping: list[str] = []
        for device, (start, stop) in zip(devices, partition(n_items, len(devices))):
            mapping.extend([device] * (stop - start))
        return mapping
    raise ValueError(f"strategy must be 'round_robin' or 'balanced', got {strategy!r}")


def device_for_local_rank(local_rank: int, devices: Sequence[str] | None = None) -> str:
    """The GPU an MPI rank should use: its node-local rank modulo the node's devices.

    With no CUDA device and no ``devices`` given, every rank gets ``cpu``.
    """
    if devices is None:
        count = cuda_device_count()
        devices = [f"cuda:{i}" for i in range(count)] or ["cpu"]
    return devices[local_rank % len(devices)]


def assignment_counts(mapping: Sequence[str]) -> dict[str, int]:
    """How many items each device got, in order of first appearance."""
    counts: dict[str, int] = {}
    for device in mapping:
        counts[device] = counts.get(device, 0) + 1
    return counts


def format_assignment(mapping: Sequence[str]) -> str:
    """``"cpu: 2, cuda:0: 2"`` for logs and console output."""
    return ", ".join(f"{device}: {n}" for device, n in assignment_counts(mapping).items())

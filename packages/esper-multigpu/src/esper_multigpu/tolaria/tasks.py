"""Classification tasks: the built-in digits set, CIFAR-10 from a local folder, and a synthetic task.

Nothing here downloads anything: digits ships inside the scikit-learn wheel, CIFAR-10 is
read from ``--data-dir`` and the synthetic task is generated from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TASKS


class TaskError(RuntimeError):
    """A task that cannot be loaded (unknown name, missing files)."""


@dataclass
class TaskData:
    """A train/validation split as float32 CPU tensors (N, C, H, W) and int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    n_classes: int

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.x_train)} train / {len(self.x_val)} val, "
            f"{self.in_channels}x{self.image_size}x{self.image_size}, {self.n_classes} classes"
        )


def _split(x: np.ndarray, y: np.ndarray, val_fraction: float, split_seed: int):
    # the split is part of the task definition, so it has its own fixed seed (not the run's)
    order = np.random.default_rng(np.random.SeedSequence(split_seed)).permutation(len(x))
    n_val = int(round(len(x) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def _standardise(x_train: torch.Tensor, x_val: torch.Tensor):
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (x_train - mean) / std, (x_val - mean) / std


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(images (1797, 8, 8) float64, labels (1797,) int64)``.

    Read straight from the file in the scikit-learn wheel (the ``np.loadtxt`` that
    ``sklearn.datasets.load_digits`` runs; the same arrays, tested), because importing
    scikit-learn costs 2-6 s of CPU per process, more than a smoke run's training.
    Falls back to ``load_digits`` where the file is not at that place.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    path = (
        Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
        if spec is not None and spec.submodule_search_locations
        else None
    )
    if path is not None and path.is_file():
        import gzip

        with gzip.open(path, mode="rt", encoding="utf-8") as f:
            data = np.loadtxt(f, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


def load_digits_task(image_size: int = 16) -> TaskData:
    """scikit-learn's 8x8 digits (1797 images), bilinearly upsampled to ``image_size``."""
    images, labels = digits_arrays()
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    xtr, ytr, xva, yva = _split(x.numpy(), labels, 0.2, split_seed=1797)
    xtr, xva = _standardise(torch.from_numpy(xtr), torch.from_numpy(xva))
    return TaskData("digits", xtr, torch.from_numpy(ytr), xva, torch.from_numpy(yva), 10)


def load_synthetic_task(
    seed: int = 0, n_train: int = 256, n_val: int = 128, n_classes: int = 4, image_size: int = 8
) -> TaskData:
    """Class templates plus Gaussian noise: learnable in a few epochs, fully seeded."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 8128]))
    templates = rng.normal(size=(n_classes, 1, image_size, image_size)).astype(np.float32)
    y = rng.integers(0, n_classes, size=n_train + n_val)
    x = templates[y] + 1.0 * rng.normal(size=(len(y), 1, image_size, image_size)).astype(np.float32)
    xtr, xva = torch.from_numpy(x[:n_train]), torch.from_numpy(x[n_train:])
    ytr, yva = (
        torch.from_numpy(y[:n_train].astype(np.int64)),
        torch.from_numpy(y[n_train:].astype(np.int64)),
    )
    return TaskData("synthetic", xtr, ytr, xva, yva, n_classes)


def load_cifar10_task(data_dir: str | Path | None) -> TaskData:
    """CIFAR-10 from ``data_dir/cifar-10-batches-py`` (the standard python pickle layout)."""
    if data_dir is None:
        raise TaskError(
            "task cifar10 needs --data-dir DIR containing cifar-10-batches-py/ (it is never downloaded at run time)"
        )
    root = Path(data_dir)
    if not (root / "cifar-10-batches-py").is_dir():
        raise TaskError(
            f"CIFAR-10 not found: expected {root / 'cifar-10-batches-py'}; fetch it once "
            "(python -c \"import torchvision; torchvision.datasets.CIFAR10('DIR', download=True)\") and pass --data-dir DIR"
        )
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(str(root), train=True, download=False)
        test = CIFAR10(str(root), train=False, download=False)
    except RuntimeError as exc:  # torchvision's integrity check failed
        raise TaskError(
            f"CIFAR-10 under {root} is incomplete or corrupt ({exc}); re-fetch it"
        ) from exc

    def to_tensor(ds):
        x = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).float() / 255.0
        return x, torch.as_tensor(ds.targets, dtype=torch.int64)

    xtr, ytr = to_tensor(train)
    xva, yva = to_tensor(test)
    xtr, xva = _standardise(xtr, xva)
    return TaskData("cifar10", xtr, ytr, xva, yva, 10)


def load_task(name: str, data_dir: str | Path | None = None, seed: int = 0) -> TaskData:
    if name == "digits":
        return load_digits_task()
    if name == "synthetic":
        return load_synthetic_task(seed)
    if name == "cifar10":
        return load_cifar10_task(data_dir)
    raise TaskError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")


class DeviceData:
    """One copy of the task per device, shared by every environment placed there.

    The copy is made once (pinned host memory, non-blocking transfer) and reused by all
    batches, so environments never re-upload their data.
    """

    def __init__(self, task: TaskData):
        self.task = task
        self._cache: dict[str, tuple[torch.Tensor, ...]] = {}
        self._pinned: tuple[torch.Tensor, ...] | None = None

    def on(self, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if device not in self._cache:
            t = self.task
            tensors = (t.x_train, t.y_train, t.x_val, t.y_val)
            if device == "cpu":
                self._cache[device] = tensors
            else:
                if self._pinned is None:
                    self._pinned = tuple(x.pin_memory() for x in tensors)
                self._cache[device] = tuple(x.to(device, non_blocking=True) for x in self._pinned)
        return self._cache[device]

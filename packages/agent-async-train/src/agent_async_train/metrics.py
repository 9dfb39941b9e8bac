"""Per-epoch logs: a CSV file (rewritten atomically) and TensorBoard scalars."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from parallel_core.io import atomic_write


class MetricsLogger:
    """Writes ``metrics.csv`` and (optionally) TensorBoard events under ``run_dir``."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "metrics.csv"
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when asked for

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def log(self, history: list[dict]) -> None:
        """Rewrite the CSV with every row so far and add the last row to TensorBoard."""
        if not history:
            return
        keys: list[str] = []
        for row in history:
            keys.extend(k for k in row if k not in keys)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
        with atomic_write(self.csv_path, "w") as f:
            f.write(buf.getvalue())
        if self._tb is not None:
            row = history[-1]
            for k, v in row.items():
                if k != "epoch" and isinstance(v, int | float) and not math.isnan(v):
                    self._tb.add_scalar(k, v, global_step=row["env_steps"])
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()

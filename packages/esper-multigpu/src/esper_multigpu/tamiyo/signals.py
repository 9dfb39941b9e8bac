"""The training signals an environment reports after each epoch."""

from __future__ import annotations

from dataclasses import dataclass, field

HISTORY = 5


@dataclass
class TrainingSignals:
    """Losses, accuracies, their deltas, plateau length and short histories of one host."""

    max_epochs: int
    epoch: int = 0
    train_loss: float = 0.0
    val_loss: float = 0.0
    train_acc: float = 0.0
    val_acc: float = 0.0
    train_loss_delta: float = 0.0
    val_loss_delta: float = 0.0
    val_acc_delta: float = 0.0
    plateau_epochs: int = 0
    best_val_acc: float = 0.0
    acc_history: list[float] = field(default_factory=list)
    loss_history: list[float] = field(default_factory=list)
    host_params: int = 0
    seed_params: int = 0

    #: a val-accuracy gain below this counts as no progress (for the plateau counter)
    plateau_tolerance: float = 0.005

    def update(
        self, epoch: int, train_loss: float, train_acc: float, val_loss: float, val_acc: float
    ) -> None:
        first = self.epoch == 0
        self.train_loss_delta = 0.0 if first else train_loss - self.train_loss
        self.val_loss_delta = 0.0 if first else val_loss - self.val_loss
        self.val_acc_delta = 0.0 if first else val_acc - self.val_acc
        if not first and val_acc < self.best_val_acc + self.plateau_tolerance:
            self.plateau_epochs += 1
        else:
            self.plateau_epochs = 0
        self.best_val_acc = max(self.best_val_acc, val_acc)
        self.epoch, self.train_loss, self.train_acc = epoch, train_loss, train_acc
        self.val_loss, self.val_acc = val_loss, val_acc
        self.acc_history = (self.acc_history + [val_acc])[-HISTORY:]
        self.loss_history = (self.loss_history + [train_loss])[-HISTORY:]

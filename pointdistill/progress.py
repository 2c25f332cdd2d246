"""Epoch lines of a training run, on the ``pointdistill.progress`` logger: silent in a library
unless configured, printed one per epoch by the `pointdistill` command (also into log files,
where progress bars are off), with the time per epoch and an estimate for the whole run."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("pointdistill.progress")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class EpochClock:
    """Times the epochs run by this process (a resumed run starts counting at its first epoch)."""

    def __init__(self, epochs: int, first_epoch: int = 0):
        self.epochs, self.first_epoch = epochs, first_epoch
        self.started = self.last = time.perf_counter()

    def log(self, epoch: int, text: str) -> None:
        """One line for the finished ``epoch`` (0-based):
        ``epoch 3/200  <text>  (this epoch 19.1 s, mean 41.2 s, ETA 2h16m)``: the epoch's own time
        (which shows at once when the machine gets busy or free) and the mean over this process's
        epochs, tested and untested alike, which the estimate for the rest uses."""
        now = time.perf_counter()
        this_epoch, self.last = now - self.last, now
        mean = (now - self.started) / (epoch + 1 - self.first_epoch)
        logger.info("epoch %d/%d  %s  (this epoch %.1f s, mean %.1f s, ETA %s)", epoch + 1, self.epochs, text,
                    this_epoch, mean, _duration(mean * (self.epochs - epoch - 1)))

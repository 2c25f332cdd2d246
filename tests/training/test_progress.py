"""The epoch line: the epoch's own time, the mean over this process's epochs and the estimate."""

import logging

from pointdistill import progress


def test_the_epoch_line_shows_the_epochs_own_time_beside_the_mean(monkeypatch, caplog):
    clock_readings = iter([100.0, 110.0, 140.0])  # start; epoch 6 ends after 10 s; epoch 7 after 30 s more
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock_readings))
    clock = progress.EpochClock(epochs=10, first_epoch=5)  # resumed after 5 epochs
    with caplog.at_level(logging.INFO, logger="pointdistill.progress"):
        clock.log(5, "loss 1.0")
        clock.log(6, "loss 0.9")
    assert caplog.messages == ["epoch 6/10  loss 1.0  (this epoch 10.0 s, mean 10.0 s, ETA 0m40s)",
                               "epoch 7/10  loss 0.9  (this epoch 30.0 s, mean 20.0 s, ETA 1m00s)"]

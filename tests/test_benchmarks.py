"""The benchmark scripts the README quotes still run against the library they measure (one broke
silently when a helper it shares with another benchmark gained an argument)."""

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_offline_vs_online_prints_both_rows_for_a_heterogeneous_teacher(shapes_dir):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "offline_vs_online.py"), shapes_dir, "--shapes", "32", "--num-points", "64",
         "--augmentations", "2", "--repeats", "1", "--model", "dgcnn", "--batch-size", "16"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("32 shapes, 64 points, batch 16, device cpu, teacher dgcnn"), lines
    rows = {line[:24].strip(): line[24:].split() for line in lines[2:]}
    assert set(rows) == {"offline (replay)", "online (live teacher)"}, lines
    seconds, peak_mib, time_ratio, memory_ratio = map(float, rows["offline (replay)"])
    assert seconds > 0 and peak_mib > 0 and time_ratio == 1.0 and memory_ratio == 1.0
    assert all(float(value) > 0 for value in rows["online (live teacher)"])


def test_step_reads_times_both_ways_of_reading_the_loss():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "step_reads.py"), "--device", "cpu", "--steps", "2", "--rounds", "1",
         "--batch", "4", "--num-points", "64"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("device cpu, batch 4 x 64 points, 2 steps"), lines
    per_step = {line[:18].strip(): float(line[18:].split()[0]) for line in lines[1:3]}
    assert set(per_step) == {"read every step", "summed on device"} and min(per_step.values()) > 0, lines
    assert lines[3].startswith("ratio read every step / summed on device: "), lines

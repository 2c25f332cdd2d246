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

"""The script a lent GPU machine runs to train students side by side (.ci/device_students.py) works
end to end, here on the CPU: it records the store, trains each run with its own changes to the
released command in its own process, and reports each finished run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from pointdistill.models import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_device_students_trains_each_run_with_its_changes(teacher_path, shapes_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "device_students.py"), "300", shapes_dir, teacher_path,
         str(tmp_path / "records.zarr"), str(out), "--device", "cpu", "--epochs", "2", "--augmentations", "2",
         "--run", "seed0={}", "--run", 'seed1_kd09={"train": {"seed": 1}, "loss": {"kd_weight": 0.9}}'],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    finished = {}
    for line in result.stdout.splitlines():
        if line.startswith("finished "):
            row = json.loads(line.split(" ", 1)[1])
            finished[row["name"]] = row
    assert set(finished) == {"seed0", "seed1_kd09"}, result.stdout[-3000:]
    assert all(0 <= row["final_test_overall_accuracy"] <= 1 for row in finished.values())
    weights = [load_checkpoint(str(out / name / "student.pt")).state_dict for name in ("seed0", "seed1_kd09")]
    first = next(k for k, v in weights[0].items() if torch.is_floating_point(v) and v.ndim == 2)
    assert not torch.equal(weights[0][first], weights[1][first])  # another seed: another student
    settings = {name: json.loads((out / name / "summary.json").read_text())["settings"] for name in finished}
    for name, seed, kd in (("seed0", 0, 0.5), ("seed1_kd09", 1, 0.9)):  # the released command, with the run's changes
        assert settings[name]["train"]["seed"] == seed and settings[name]["loss"]["kd_weight"] == kd, settings[name]
        assert settings[name]["quantizer"] == "bireal" and settings[name]["head_shortcuts"] is True
        assert settings[name]["train"]["epochs"] == 2 and settings[name]["train"]["lr"] == 3e-3

"""The CUDA path, as a user with one GPU runs it: recording, teacher training and student training.

Skipped where torch sees no CUDA device (CI has none); run it on a GPU machine with
``pytest tests/test_cuda.py``.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch
import zarr

from pointdistill.api import load_engine
from pointdistill.data import load_dataset
from pointdistill.distill import StudentJob, StudentTrainConfig, run_student_job
from pointdistill.engine.export import export_file
from pointdistill.engine.predict import predict
from pointdistill.losses import LossConfig
from pointdistill.models import PointNetConfig, load_checkpoint, model_spec
from pointdistill.parquet import parquet_rows
from pointdistill.records import RecordingJob, record_in_process
from pointdistill.train import TrainConfig, train_classifier

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def record(teacher, dataset, store, device):
    job = RecordingJob(teacher=teacher, dataset=dataset, store=store, augmentations=2, chunk_shapes=24,
                       seed=7, device=device)
    record_in_process(job)
    return zarr.open_group(store, mode="r")


def test_records_on_cuda_match_records_on_cpu(teacher_path, shapes_dir, tmp_path):
    cpu = record(teacher_path, shapes_dir, str(tmp_path / "cpu.zarr"), "cpu")
    gpu = record(teacher_path, shapes_dir, str(tmp_path / "gpu.zarr"), "cuda")
    assert np.array_equal(cpu["params"][:], gpu["params"][:])  # the augmentations do not depend on the device
    for name in ("logits", "pooled"):  # float16 records of float32 forwards: equal within a few float16 steps
        a, b = cpu[name][:].astype(np.float32), gpu[name][:].astype(np.float32)
        assert np.allclose(a, b, rtol=1e-2, atol=1e-2), f"{name}: max |difference| {np.abs(a - b).max()}"


def test_teacher_trains_on_cuda(shapes_dir):
    train_set, test_set = load_dataset(shapes_dir, "train", 128), load_dataset(shapes_dir, "test", 128)
    spec = model_spec("pointnet", PointNetConfig(num_classes=train_set.num_classes, point_widths=(16, 16, 32, 32, 64),
                                                 head_widths=(32, 16)))
    checkpoint = train_classifier(spec, train_set, test_set, TrainConfig(epochs=3, batch_size=16, device="cuda"),
                                  progress=False)
    losses = [row["train_loss"] for row in checkpoint.metrics["history"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(t.device.type == "cpu" for t in checkpoint.state_dict.values())  # loads anywhere


def test_student_trains_on_cuda_and_deploys_as_reported(recorded_store, shapes_dir, tmp_path):
    job = StudentJob(store=recorded_store, dataset=shapes_dir, out=str(tmp_path / "run"), quantizer="lsr",
                     aggregation="ema", loss=LossConfig(kd_weight=0.5, reg_weight=0.01, self_weight=0.1),
                     train=StudentTrainConfig(epochs=3, batch_size=16, device="cuda", seed=3))
    summary = run_student_job(job, progress=False)
    history = parquet_rows(summary["outputs"]["metrics"])
    assert all(np.isfinite(row["loss_total"]) for row in history)
    assert history[-1]["loss_ce"] < history[0]["loss_ce"]
    # the reported accuracy is the exported model's, run by the CPU engine
    export_file(summary["outputs"]["checkpoint"], str(tmp_path / "student.pdbn"))
    test_set = load_dataset(shapes_dir, "test", 128)
    predicted = predict(load_engine(str(tmp_path / "student.pdbn")), test_set.points).argmax(1)
    assert np.mean(predicted == test_set.labels) == summary["final_test_overall_accuracy"]
    assert load_checkpoint(summary["outputs"]["checkpoint"]).build_model() is not None  # a CPU-only load
    assert run_student_job(replace(job, existing="resume"), progress=False) == summary  # finished: reported


def test_summing_a_step_on_cuda_never_waits_for_the_gpu():
    from pointdistill.epoch_totals import EpochTotals

    device = torch.device("cuda")
    totals = EpochTotals(device, ("ce", "kd"))
    logits, labels = torch.randn(8, 4, device=device), torch.randint(0, 4, (8,), device=device)
    terms = {"ce": torch.rand((), device=device), "kd": torch.rand((), device=device)}
    torch.cuda.set_sync_debug_mode("error")  # any host read raises
    try:
        for step in range(1, 4):
            totals.add(step, terms["ce"] + terms["kd"], terms, logits, labels)
            totals.after_step(1, 1, 3)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    means = totals.means()
    assert means["total"] == pytest.approx(float(terms["ce"] + terms["kd"]), rel=1e-6)
    assert means["accuracy"] == float((logits.argmax(1) == labels).float().mean())

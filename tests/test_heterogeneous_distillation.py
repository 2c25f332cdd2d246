"""A binary PointNet replayed from a store recorded by another architecture (DGCNN), its pooling
regulariser going through a learned linear adapter that only training has."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import pointdistill.distill
from pointdistill.distill import StudentJob, StudentTrainConfig, run_student_job
from pointdistill.engine.export import export_student
from pointdistill.losses import LossConfig
from pointdistill.models import DGCNNConfig, load_checkpoint, model_spec
from pointdistill.parquet import parquet_rows


def _job(store, dataset, out, **changes):
    job = StudentJob(store=store, dataset=dataset, out=str(out), quantizer="lsr", aggregation="ema",
                     point_widths=(16, 16, 32), head_widths=(16,),
                     loss=LossConfig(kd_weight=0.5, reg_weight=0.01),
                     train=StudentTrainConfig(epochs=3, batch_size=16, device="cpu", seed=1))
    return replace(job, **changes)


def test_a_dgcnn_store_trains_a_binary_pointnet_through_an_adapter_it_never_exports(dgcnn_store, shapes_dir, tmp_path):
    summary = run_student_job(_job(dgcnn_store, shapes_dir, tmp_path / "run"), progress=False)
    assert summary["pooled_adapter"] == {"student_width": 32, "teacher_width": 48}
    history = parquet_rows(summary["outputs"]["metrics"])
    assert all(row["loss_reg"] > 0 for row in history)
    assert history[-1]["loss_reg"] < history[0]["loss_reg"]  # the adapted student moves towards the teacher
    student = load_checkpoint(summary["outputs"]["checkpoint"])
    assert student.spec["name"] == "binary_pointnet" and student.spec["point_widths"] == [16, 16, 32]
    assert not any(key.startswith("adapter") or "adapter" in key for key in student.state_dict)
    student.build_model()  # loads strictly: nothing but the student's own weights
    export_student(student)  # and exports to the engine as any student does


def test_a_student_of_a_dgcnn_defaults_to_bipointnet_widths():
    spec = pointdistill.distill.student_spec(json.loads(json.dumps(model_spec("dgcnn", DGCNNConfig(num_classes=12)))), "lsr", "ema")
    assert (spec["point_widths"], spec["head_widths"]) == ([64, 64, 64, 128, 1024], [512, 256])


def test_an_interrupted_run_resumes_its_adapter_bit_identical(dgcnn_store, shapes_dir, tmp_path, monkeypatch):
    reference = run_student_job(_job(dgcnn_store, shapes_dir, tmp_path / "reference"), progress=False)
    evaluate = pointdistill.distill.evaluate_as_deployed
    calls = []

    def stop_in_the_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(pointdistill.distill, "evaluate_as_deployed", stop_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_student_job(_job(dgcnn_store, shapes_dir, tmp_path / "resumed"), progress=False)
    monkeypatch.setattr(pointdistill.distill, "evaluate_as_deployed", evaluate)
    resumed = run_student_job(_job(dgcnn_store, shapes_dir, tmp_path / "resumed", existing="resume"), progress=False)
    a, b = (load_checkpoint(Path(s["outputs"]["checkpoint"])).state_dict for s in (reference, resumed))
    assert all(torch.equal(a[key], b[key]) for key in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(parquet_rows(reference["outputs"]["metrics"])) == strip(parquet_rows(resumed["outputs"]["metrics"]))

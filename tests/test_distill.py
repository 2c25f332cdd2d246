"""Training binary students by replay, as users run it."""

import os
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

import pointdistill.weight_average
from pointdistill.api import load_engine
from pointdistill.data import load_dataset
from pointdistill.data.split import validation_indices, validation_subset
from pointdistill.distill import StudentJob, StudentTrainConfig, run_student_job
from pointdistill.engine.export import export_file, export_student
from pointdistill.engine.predict import predict
from pointdistill.engine.runtime import Engine
from pointdistill.losses import LossConfig
from pointdistill.models import load_checkpoint
from pointdistill.parquet import parquet_rows
from pointdistill.records import RecordingJob, record_in_process
from pointdistill.train import evaluate

KD_REG = LossConfig(kd_weight=0.5, reg_weight=0.01, self_weight=0.1)


def job_for(store, dataset, out, **changes):
    job = StudentJob(store=store, dataset=dataset, out=str(out), quantizer="lsr", aggregation="ema", loss=KD_REG,
                     train=StudentTrainConfig(epochs=2, batch_size=16, device="cpu", seed=3))
    return replace(job, **changes)


def test_trains_without_the_teacher_file_and_writes_every_output(teacher_path, shapes_dir, tmp_path):
    teacher = tmp_path / "teacher.pt"
    shutil.copy(teacher_path, teacher)
    job = RecordingJob(teacher=str(teacher), dataset=shapes_dir, store=str(tmp_path / "records.zarr"),
                       augmentations=2, chunk_shapes=24)
    record_in_process(job)
    os.remove(teacher)  # students replay the store; the teacher is gone
    store = tmp_path / "records.zarr"
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    summary = run_student_job(job_for(str(store), shapes_dir, tmp_path / "run"), progress=False)
    after = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    assert before == after  # the store is never written
    outputs = summary["outputs"]
    history = parquet_rows(outputs["metrics"])
    assert [row["epoch"] for row in history] == [1, 2]
    assert {"loss_ce", "loss_kd", "loss_reg", "loss_self", "loss_total", "train_accuracy", "weight_flips",
            "test_overall_accuracy", "test_mean_class_accuracy"} <= set(history[0])
    assert all(0 < row["weight_flips"] < 0.5 for row in history)  # a training epoch flips some signs, not most
    assert history[0]["loss_self"] == 0.0 < history[1]["loss_self"]  # nothing to compare in epoch 1
    assert os.path.getsize(outputs["curves"]) > 1000
    test_set = load_dataset(shapes_dir, "test", 128)
    sizes = summary["student_bytes"]  # one definition: the bytes of the model file export writes
    exported = export_file(outputs["checkpoint"], str(tmp_path / "student.pdbn"))
    # the accuracy reported is the deployed model's: what `pointdistill predict` gives for the .pdbn
    predicted = predict(load_engine(str(tmp_path / "student.pdbn")), test_set.points).argmax(1)
    assert np.mean(predicted == test_set.labels) == summary["final_test_overall_accuracy"]
    student = load_checkpoint(outputs["checkpoint"]).build_model()  # the float forward agrees
    assert evaluate(student, test_set)["overall_accuracy"] == pytest.approx(
        summary["final_test_overall_accuracy"], abs=1.01 / len(test_set))
    assert sizes["packed_bytes"] == exported["bytes"] == os.path.getsize(tmp_path / "student.pdbn")
    assert sizes["float_bytes"] == exported["float_weight_bytes"] > sizes["packed_bytes"]


def test_same_seed_gives_the_same_student_on_cpu(recorded_store, shapes_dir, tmp_path):
    a = run_student_job(job_for(recorded_store, shapes_dir, tmp_path / "a"), progress=False)
    b = run_student_job(job_for(recorded_store, shapes_dir, tmp_path / "b"), progress=False)
    sa = load_checkpoint(a["outputs"]["checkpoint"]).state_dict
    sb = load_checkpoint(b["outputs"]["checkpoint"]).state_dict
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_evaluating_every_other_epoch_trains_the_same_student(recorded_store, shapes_dir, tmp_path):
    three = StudentTrainConfig(epochs=3, batch_size=16, device="cpu", seed=3)
    every = run_student_job(job_for(recorded_store, shapes_dir, tmp_path / "every", train=three), progress=False)
    sparse_job = job_for(recorded_store, shapes_dir, tmp_path / "sparse", train=replace(three, eval_every=2))
    sparse = run_student_job(sparse_job, progress=False)
    weights = [load_checkpoint(run["outputs"]["checkpoint"]).state_dict for run in (every, sparse)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # evaluation changes nothing
    rows = [parquet_rows(run["outputs"]["metrics"]) for run in (every, sparse)]
    assert np.isnan(rows[1][0]["test_overall_accuracy"]) and np.isnan(rows[1][0]["test_mean_class_accuracy"])
    for epoch in (1, 2):  # epoch 2 (every other) and 3 (the last) are evaluated, as in the full run
        assert rows[1][epoch]["test_overall_accuracy"] == rows[0][epoch]["test_overall_accuracy"]
    assert rows[1][0]["loss_total"] == rows[0][0]["loss_total"]
    assert sparse["final_test_overall_accuracy"] == every["final_test_overall_accuracy"]
    assert sparse["best_epoch"] in (2, 3) and os.path.getsize(sparse["outputs"]["curves"]) > 1000
    # how often a run is evaluated is no setting of the training: it resumes with another value
    resumed = replace(sparse_job, existing="resume", train=replace(sparse_job.train, eval_every=1))
    assert run_student_job(resumed, progress=False) == sparse


def test_dropout_and_weight_decay_each_change_the_training_and_leave_the_export_exact(
        recorded_store, shapes_dir, tmp_path):
    plain = run_student_job(job_for(recorded_store, shapes_dir, tmp_path / "plain"), progress=False)
    dropout = run_student_job(job_for(recorded_store, shapes_dir, tmp_path / "dropout", dropout=0.4), progress=False)
    decay = StudentTrainConfig(epochs=2, batch_size=16, device="cpu", seed=3, weight_decay=1e-2)
    decayed = run_student_job(job_for(recorded_store, shapes_dir, tmp_path / "decay", train=decay), progress=False)
    assert dropout["student"]["dropout"] == 0.4 and decayed["settings"]["train"]["weight_decay"] == 1e-2
    weights = [load_checkpoint(run["outputs"]["checkpoint"]).state_dict for run in (plain, dropout, decayed)]
    for other in weights[1:]:
        assert any(not torch.equal(weights[0][k], other[k]) for k in weights[0])
    checkpoint = load_checkpoint(dropout["outputs"]["checkpoint"])
    head = list(checkpoint.build_model().head)
    assert [type(m) for m in head[-2:]] == [torch.nn.Dropout, torch.nn.Linear]  # before the float layer only
    assert sum(isinstance(m, torch.nn.Dropout) for m in head) == 1
    # dropout is off at test time: the bit-packed engine scores exactly what the run recorded
    test_set = load_dataset(shapes_dir, "test", 128)
    predicted = predict(Engine(export_student(checkpoint)), test_set.points).argmax(1)
    assert np.mean(predicted == test_set.labels) == dropout["final_test_overall_accuracy"]
    with pytest.raises(ValueError, match="StudentJob.dropout must be in"):
        job_for(recorded_store, shapes_dir, tmp_path / "bad", dropout=1.0)


def test_weight_averaging_deploys_the_mean_of_the_last_epochs_and_trains_the_same(
        recorded_store, shapes_dir, tmp_path, monkeypatch):
    three = StudentTrainConfig(epochs=3, batch_size=16, device="cpu", seed=3)
    plain = run_student_job(job_for(recorded_store, shapes_dir, tmp_path / "plain", train=three), progress=False)
    added = []  # the states the average was given, as the model held them
    real_add = pointdistill.weight_average.WeightAverage.add

    def recording_add(self, model):
        added.append({k: v.clone() for k, v in model.state_dict().items()})
        real_add(self, model)

    monkeypatch.setattr(pointdistill.weight_average.WeightAverage, "add", recording_add)
    averaged = run_student_job(job_for(recorded_store, shapes_dir, tmp_path / "averaged",
                                       train=replace(three, average_from=2)), progress=False)
    assert len(added) == 2 and averaged["weights_averaged_over_epochs"] == [2, 3]
    live = load_checkpoint(plain["outputs"]["checkpoint"]).state_dict
    assert all(torch.equal(added[-1][k], live[k]) for k in live)  # averaging changes no step of the training
    checkpoint = load_checkpoint(averaged["outputs"]["checkpoint"])
    for key, value in checkpoint.state_dict.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (added[0][key] + added[1][key]) / 2, rtol=0, atol=1e-6)
        else:  # BatchNorm's batch counters: the last epoch's
            assert torch.equal(value, added[1][key])
    assert any(not torch.equal(checkpoint.state_dict[k], live[k]) for k in live)
    # the deployed student is the average: its .pdbn scores the run's final accuracy
    test_set = load_dataset(shapes_dir, "test", 128)
    predicted = predict(Engine(export_student(checkpoint)), test_set.points).argmax(1)
    assert np.mean(predicted == test_set.labels) == averaged["final_test_overall_accuracy"]
    assert averaged["last_epoch_weights_test_overall_accuracy"] == plain["final_test_overall_accuracy"]
    rows = parquet_rows(averaged["outputs"]["metrics"])
    assert np.isnan(rows[0]["averaged_test_overall_accuracy"])  # nothing averaged after epoch 1
    assert rows[-1]["averaged_test_overall_accuracy"] == averaged["final_test_overall_accuracy"]
    assert rows[1]["averaged_test_overall_accuracy"] == rows[1]["test_overall_accuracy"]  # one state: the live one
    plain_rows = parquet_rows(plain["outputs"]["metrics"])
    assert [row["loss_total"] for row in rows] == [row["loss_total"] for row in plain_rows]
    assert "averaged_test_overall_accuracy" not in plain_rows[0] and plain["weights_averaged_over_epochs"] is None
    with pytest.raises(ValueError, match=r"StudentTrainConfig.average_from .* 1..3"):
        replace(three, average_from=4)


def test_offline_and_online_first_batch_losses_agree(recorded_store, shapes_dir, teacher_path, tmp_path):
    one_epoch = StudentTrainConfig(epochs=1, batch_size=16, device="cpu", seed=3)
    offline = run_student_job(job_for(recorded_store, shapes_dir, tmp_path / "off", train=one_epoch), progress=False)
    online = run_student_job(job_for(recorded_store, shapes_dir, tmp_path / "on", train=one_epoch,
                                     online_teacher=teacher_path), progress=False)
    off, on = offline["first_step_terms"], online["first_step_terms"]
    assert off["ce"] == on["ce"]  # same student, same inputs
    for term in ("kd", "reg", "total"):  # teacher targets differ only by fp16 storage
        assert off[term] == pytest.approx(on[term], rel=2e-3, abs=1e-3), term


@pytest.mark.parametrize("quantizer, aggregation", [("bnn", "max"), ("xnor", "max"), ("irnet", "ema"),
                                                    ("bireal", "ema")])
def test_every_quantizer_and_aggregation_trains(recorded_store, shapes_dir, tmp_path, quantizer, aggregation):
    job = job_for(recorded_store, shapes_dir, tmp_path, quantizer=quantizer, aggregation=aggregation,
                  train=StudentTrainConfig(epochs=1, batch_size=16, device="cpu"))
    summary = run_student_job(job, progress=False)
    assert summary["student"]["quantizer"] == quantizer
    assert 0.0 <= summary["final_test_overall_accuracy"] <= 1.0
    sizes = summary["student_bytes"]
    if quantizer == "xnor":  # export refuses it: no bit-packed size, and the summary says why
        assert sizes["packed_bytes"] is None and "plain signs" in sizes["not_packed"]
        student = load_checkpoint(summary["outputs"]["checkpoint"]).build_model()  # evaluated in float
        assert evaluate(student, load_dataset(shapes_dir, "test", 128))["overall_accuracy"] == \
            summary["final_test_overall_accuracy"]
    else:
        assert 0 < sizes["packed_bytes"] < sizes["float_bytes"] and sizes["not_packed"] is None


def test_a_narrower_student_regularises_through_an_adapter_and_a_matching_one_without(
        recorded_store, shapes_dir, tmp_path):
    job = job_for(recorded_store, shapes_dir, tmp_path / "narrow", point_widths=(8, 8, 16, 16, 32),
                  train=StudentTrainConfig(epochs=1, device="cpu"))
    summary = run_student_job(job, progress=False)
    assert summary["student"]["point_widths"] == [8, 8, 16, 16, 32]
    assert summary["pooled_adapter"] == {"student_width": 32, "teacher_width": 64}
    same = run_student_job(replace(job, out=str(tmp_path / "same"), point_widths=None), progress=False)
    assert same["pooled_adapter"] is None


def test_a_validation_split_is_held_out_of_replay_and_evaluated_every_epoch(recorded_store, shapes_dir, tmp_path):
    summary = run_student_job(job_for(recorded_store, shapes_dir, tmp_path / "run", validation_fraction=0.25),
                              progress=False)
    train = load_dataset(shapes_dir, "train", 128)
    held_out = validation_indices(train.labels, 0.25)
    assert summary["validation_shapes"] == held_out.size > 0
    assert summary["settings"]["validation_fraction"] == 0.25  # resuming with another split is refused
    history = parquet_rows(summary["outputs"]["metrics"])
    assert all(0 <= row["validation_overall_accuracy"] <= 1 for row in history)
    engine = Engine(export_student(load_checkpoint(summary["outputs"]["checkpoint"])))
    validation = validation_subset(train, held_out)
    predicted = predict(engine, validation.points).argmax(1)
    assert np.mean(predicted == validation.labels) == summary["final_validation_overall_accuracy"]
    assert history[-1]["validation_mean_class_accuracy"] == pytest.approx(
        summary["final_validation_mean_class_accuracy"])

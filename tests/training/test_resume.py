"""Runs that survive: a killed, diverged or out-of-space training run resumes to the same
bits as an uninterrupted one; outputs are never mixed or silently replaced."""

import errno
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import pointdistill.distill
import pointdistill.storage
from pointdistill.distill import StudentJob, StudentTrainConfig, run_student_job
from pointdistill.epoch_totals import TrainingDiverged
from pointdistill.losses import LossConfig
from pointdistill.models import load_checkpoint
from pointdistill.models.teacher_options import TeacherOptions
from pointdistill.parquet import parquet_rows
from pointdistill.run_directory import RunDirectory, RunDirectoryError
from pointdistill.storage import DiskFullError
from pointdistill.train import TeacherJob, TrainConfig, run_teacher_job

REPO = Path(__file__).resolve().parents[2]
KD_REG_SELF = LossConfig(kd_weight=0.5, reg_weight=0.01, self_weight=0.1)


def student_job(store, dataset, out, **changes):
    job = StudentJob(store=store, dataset=dataset, out=str(out), quantizer="lsr", aggregation="ema",
                     loss=KD_REG_SELF, train=StudentTrainConfig(epochs=3, batch_size=16, device="cpu", seed=3))
    return replace(job, **changes)


def teacher_job(dataset, out, **changes):
    options = TeacherOptions(point_widths=(16, 16, 32, 32, 64), head_widths=(32, 16), feature_transform=True)
    job = TeacherJob(dataset=dataset, out=str(out), num_points=128, options=options,
                     train=TrainConfig(epochs=3, batch_size=16, device="cpu", seed=1))
    return replace(job, **changes)


def same_threads_env() -> dict:
    """The environment for a child run with this process's torch thread count: float reductions
    (and so the bits) depend on it, and a Dask LocalCluster started by an earlier test leaves
    OMP_NUM_THREADS=1 (and MKL_, OPENBLAS_) in os.environ."""
    threads = str(torch.get_num_threads())
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}


def assert_same_student(a: Path, b: Path, epochs_without_flips: int = 0):
    """Bit-identical weights and metrics (all but wall-clock seconds); b's first
    ``epochs_without_flips`` epochs (saved by an older version) have NaN sign flips."""
    wa, wb = load_checkpoint(a / "student.pt").state_dict, load_checkpoint(b / "student.pt").state_dict
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    ha, hb = (parquet_rows(p / "metrics.parquet") for p in (a, b))
    for ra, rb in zip(ha[:epochs_without_flips], hb):
        assert math.isnan(rb.pop("weight_flips")) and ra.pop("weight_flips") > 0
    def comparable(row):  # untested epochs' NaN accuracies equal each other here
        return {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items() if k != "seconds"}

    assert [comparable(r) for r in ha] == [comparable(r) for r in hb]
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    assert {k: v for k, v in sa.items() if k != "outputs"} == {k: v for k, v in sb.items() if k != "outputs"}


@pytest.fixture(scope="module")
def uninterrupted(recorded_store, shapes_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "student"
    run_student_job(student_job(recorded_store, shapes_dir, out), progress=False)
    return out


KILL_SCRIPT = """
import sys
from dataclasses import replace
sys.path.insert(0, {tests!r})
from test_resume import student_job
from pointdistill.distill import run_student_job
run_student_job(replace(student_job({store!r}, {dataset!r}, {out!r}, existing={existing!r}),
                        train=replace(student_job('', '', '').train, epochs={epochs})), progress=False)
"""


def test_kill_9_at_a_random_moment_then_resume_is_bit_identical(recorded_store, shapes_dir, tmp_path):
    epochs = 6
    reference = tmp_path / "reference"
    run_student_job(replace(student_job(recorded_store, shapes_dir, reference),
                            train=replace(student_job("", "", "").train, epochs=epochs)), progress=False)
    out = tmp_path / "killed"
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), store=recorded_store, dataset=shapes_dir,
                                out=str(out), existing="refuse", epochs=epochs)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=same_threads_env())
    state = Path(f"{out}.incomplete") / "state.pt"
    while not state.exists() and child.poll() is None:
        time.sleep(0.01)
    rest = sum(row["seconds"] for row in parquet_rows(reference / "metrics.parquet")[1:])
    delay = random.uniform(0.0, 0.9 * rest)  # past the first epoch: anywhere in the rest of the run
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished = (out / "student.pt").exists()  # possible when the child ran faster than the reference
    print(f"killed {delay:.2f} of {rest:.2f} s after the first checkpoint; finished before the kill: {finished}")
    refusal = "already exists.*--overwrite" if finished else "--resume"
    with pytest.raises(RunDirectoryError, match=refusal):  # never silently restarted or replaced
        run_student_job(replace(student_job(recorded_store, shapes_dir, out),
                                train=replace(student_job("", "", "").train, epochs=epochs)), progress=False)
    run_student_job(replace(student_job(recorded_store, shapes_dir, out, existing="resume"),
                            train=replace(student_job("", "", "").train, epochs=epochs)), progress=False)
    assert_same_student(reference, out)
    assert not Path(f"{out}.incomplete").exists()


def patch_step_2_of_epoch_2(monkeypatch, change):
    """Make distill.total_loss return change(total, terms) at its 6th call: step 2 of epoch 2 of
    the 4-step epochs student_job trains, epoch 1's state saved (monkeypatch.undo() restores it)."""
    real_total_loss = pointdistill.distill.total_loss
    calls = []

    def patched(*args):
        calls.append(1)
        total, terms = real_total_loss(*args)
        return change(total, terms) if len(calls) == 6 else (total, terms)

    monkeypatch.setattr(pointdistill.distill, "total_loss", patched)


def test_a_diverged_run_keeps_its_last_good_epoch_and_resumes_bit_identical(
        recorded_store, shapes_dir, uninterrupted, tmp_path, monkeypatch):
    def nan_loss(total, terms):
        return total * float("nan"), terms

    patch_step_2_of_epoch_2(monkeypatch, nan_loss)
    out = tmp_path / "student"
    with pytest.raises(TrainingDiverged, match=r"epoch 2/3, step 2/4: the loss is nan .*state after epoch 1"):
        run_student_job(student_job(recorded_store, shapes_dir, out), progress=False)
    assert not out.exists()
    monkeypatch.undo()
    run_student_job(student_job(recorded_store, shapes_dir, out, existing="resume"), progress=False)
    assert_same_student(uninterrupted, out)


def test_resuming_with_other_settings_is_refused_naming_the_fields(recorded_store, shapes_dir, tmp_path):
    out = tmp_path / "student"
    one_epoch = student_job(recorded_store, shapes_dir, out, existing="resume")
    with RunDirectory(out, "refuse", {"placeholder": 1}) as run:  # an interrupted run's state ...
        run.save_state({})
    with pytest.raises(RunDirectoryError, match=r"settings differ .*placeholder: 1 in the interrupted run"):
        run_student_job(one_epoch, progress=False)
    run_student_job(replace(one_epoch, existing="overwrite"), progress=False)
    changed = replace(one_epoch, loss=LossConfig(kd_weight=0.9), train=replace(one_epoch.train, lr=0.01))
    with pytest.raises(RunDirectoryError, match=r"loss.kd_weight: 0.5 in that run, 0.9 now.*train.lr: 0.001"):
        run_student_job(changed, progress=False)  # a finished run is not reported as another's


def test_an_existing_output_is_never_silently_replaced(recorded_store, shapes_dir, tmp_path):
    out = tmp_path / "student"
    job = student_job(recorded_store, shapes_dir, out, train=replace(student_job("", "", "").train, epochs=1))
    first = run_student_job(job, progress=False)
    before = (out / "student.pt").read_bytes()
    with pytest.raises(RunDirectoryError, match="already exists.*--overwrite"):
        run_student_job(replace(job, train=replace(job.train, seed=4)), progress=False)
    assert (out / "student.pt").read_bytes() == before
    assert not Path(f"{out}.incomplete").exists()  # a refused run leaves nothing behind
    assert run_student_job(replace(job, existing="resume"), progress=False) == first  # finished: reported
    second = run_student_job(replace(job, train=replace(job.train, seed=4), existing="overwrite"), progress=False)
    assert (out / "student.pt").read_bytes() != before
    assert json.loads((out / "summary.json").read_text())["seed"] == second["seed"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "metrics.parquet", "student.pt", "summary.json"]


def test_one_run_at_a_time_per_output_and_a_dead_holder_never_blocks(tmp_path):
    out = tmp_path / "run"
    with RunDirectory(out, "refuse", {}) as first:
        first.save_state({"epoch": 1})
        with pytest.raises(RunDirectoryError, match=rf"another run \(pid {os.getpid()}\) is writing it now"):
            RunDirectory(out, "resume", {}).__enter__()
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from pointdistill.run_directory import RunDirectory
run = RunDirectory({str(out)!r}, "resume", {{}}).__enter__()
print("locked", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirectoryError, match=rf"pid {holder.pid}"):
        RunDirectory(out, "resume", {}).__enter__()
    holder.kill()
    holder.wait()
    with RunDirectory(out, "resume", {}) as run:  # the kernel dropped the killed holder's lock
        assert run.state["epoch"] == 1


def test_a_full_disk_while_saving_names_the_file_and_keeps_the_last_good_state(
        recorded_store, shapes_dir, uninterrupted, tmp_path, monkeypatch):
    real_open = open
    saves = []

    class FullDisk:
        def __init__(self, file):
            self.file = file

        def write(self, data):
            self.file.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    def open_filling_the_disk_on_the_second_state(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        if "state.pt" in str(path):
            saves.append(path)
            if len(saves) == 2:
                return FullDisk(file)
        return file

    # run_directory writes through storage.write_private_copy
    monkeypatch.setattr(pointdistill.storage, "open", open_filling_the_disk_on_the_second_state, raising=False)
    out = tmp_path / "student"
    with pytest.raises(DiskFullError, match=r"disk full while writing .*student.incomplete/state.pt"):
        run_student_job(student_job(recorded_store, shapes_dir, out), progress=False)
    work = Path(f"{out}.incomplete")
    assert sorted(p.name for p in work.iterdir()) == ["lock", "state.pt"]  # no partial file left
    monkeypatch.undo()
    run_student_job(student_job(recorded_store, shapes_dir, out, existing="resume"), progress=False)
    assert_same_student(uninterrupted, out)


def test_a_killed_teacher_run_resumes_bit_identical(shapes_dir, tmp_path):
    reference = tmp_path / "reference.pt"
    run_teacher_job(teacher_job(shapes_dir, reference), progress=False)
    out = tmp_path / "teacher.pt"
    child = subprocess.Popen([sys.executable, "-c", f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_resume import teacher_job
from pointdistill.run_directory import RunDirectory
import pointdistill.train as train
save_state = RunDirectory.save_state
def save_then_die(self, state):
    save_state(self, state)
    if len(state["history"]) == 2:
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
RunDirectory.save_state = save_then_die
train.run_teacher_job(teacher_job({shapes_dir!r}, {str(out)!r}), progress=False)
"""], cwd=REPO, env=same_threads_env())
    assert child.wait() == -signal.SIGKILL
    assert not out.exists()
    metrics = run_teacher_job(teacher_job(shapes_dir, out, existing="resume"), progress=False)
    a, b = load_checkpoint(reference), load_checkpoint(out)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert a.metrics == b.metrics == {k: v for k, v in metrics.items() if k != "outputs"}
    # the epochs before the kill included
    rows = parquet_rows(metrics["outputs"]["metrics"])
    assert rows == a.metrics["history"] and len(rows) == 3


def test_testing_a_teacher_every_other_epoch_trains_the_same_teacher(shapes_dir, tmp_path):
    every = run_teacher_job(teacher_job(shapes_dir, tmp_path / "every.pt"), progress=False)
    job = teacher_job(shapes_dir, tmp_path / "sparse.pt")
    sparse = run_teacher_job(replace(job, train=replace(job.train, eval_every=2)), progress=False)
    a, b = load_checkpoint(tmp_path / "every.pt"), load_checkpoint(tmp_path / "sparse.pt")
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    rows = [parquet_rows(run["outputs"]["metrics"]) for run in (every, sparse)]
    assert math.isnan(rows[1][0]["test_overall_accuracy"])  # epoch 1 not tested; 2 (every other) and 3 (last) are
    assert [r["test_overall_accuracy"] for r in rows[1][1:]] == [r["test_overall_accuracy"] for r in rows[0][1:]]
    assert sparse["test_overall_accuracy"] == every["test_overall_accuracy"]


def test_a_run_saved_before_a_setting_existed_resumes_at_its_default(
        recorded_store, shapes_dir, uninterrupted, tmp_path, monkeypatch):
    """An upgrade between a kill and its --resume: the interrupted run's saved settings lack a
    setting added since (here dropout); it resumes where the setting is at its default."""
    def interrupt(total, terms):
        raise KeyboardInterrupt

    patch_step_2_of_epoch_2(monkeypatch, interrupt)
    out = tmp_path / "student"
    with pytest.raises(KeyboardInterrupt):
        run_student_job(student_job(recorded_store, shapes_dir, out), progress=False)
    monkeypatch.undo()
    state_path = Path(f"{out}.incomplete") / "state.pt"
    state = torch.load(state_path, weights_only=True)
    del state["settings"]["dropout"], state["settings"]["train"]["weight_decay"]  # as an older version saved it
    del state["history"][0]["weight_flips"]
    torch.save(state, state_path)
    with pytest.raises(RunDirectoryError, match=r"dropout: 0.0 in the interrupted run, 0.3 now$"):
        run_student_job(student_job(recorded_store, shapes_dir, out, existing="resume", dropout=0.3), progress=False)
    run_student_job(student_job(recorded_store, shapes_dir, out, existing="resume"), progress=False)
    assert_same_student(uninterrupted, out, epochs_without_flips=1)


def test_a_weight_averaging_run_resumes_to_the_same_average(recorded_store, shapes_dir, tmp_path, monkeypatch):
    """The average so far is part of the saved state: a run interrupted in epoch 2 ends with the
    same averaged student (and every averaged accuracy) as an uninterrupted one. Averaging does
    not change the training, so a run may also be resumed with averaging switched on, from an
    epoch not yet done; never so that a done epoch is missing from the average."""
    def averaging(first):
        return replace(student_job("", "", "").train, average_from=first)

    def interrupted_in_epoch_2(out, train):
        patch_step_2_of_epoch_2(monkeypatch, interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_student_job(student_job(recorded_store, shapes_dir, out, train=train), progress=False)
        monkeypatch.undo()

    def interrupt(total, terms):
        raise KeyboardInterrupt

    def resume(out, train):
        return run_student_job(student_job(recorded_store, shapes_dir, out, existing="resume", train=train),
                               progress=False)

    for first in (1, 2):
        run_student_job(student_job(recorded_store, shapes_dir, tmp_path / f"from{first}", train=averaging(first)),
                        progress=False)
    out = tmp_path / "averaging"
    interrupted_in_epoch_2(out, averaging(1))
    with pytest.raises(RunDirectoryError, match=r"average_from: .* averaged the weights of epochs 1..1; resume it "
                                                r"with average_from 1"):
        resume(out, averaging(2))
    resume(out, averaging(1))
    assert_same_student(tmp_path / "from1", out)
    assert json.loads((out / "summary.json").read_text())["weights_averaged_over_epochs"] == [1, 3]

    out = tmp_path / "switched_on"  # interrupted without averaging, resumed with it
    interrupted_in_epoch_2(out, averaging(0))
    with pytest.raises(RunDirectoryError, match=r"average_from: .* finished epochs 1..1 without averaging them"):
        resume(out, averaging(1))
    resume(out, averaging(2))
    assert_same_student(tmp_path / "from2", out)
    with pytest.raises(RunDirectoryError, match=r"holds a finished run with weights averaged from epoch 2 .* not 0"):
        resume(out, averaging(0))

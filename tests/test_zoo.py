"""Released models: every file in the zoo matches its manifest and runs; loading checks the bytes."""

import shutil

import numpy as np
import pytest
import torch

import pointdistill
from pointdistill.data.generated import generate_split
from pointdistill.distill import StudentJob, StudentTrainConfig, run_student_job
from pointdistill.engine.export import export_file
from pointdistill.models import load_checkpoint
from pointdistill.records.summary import store_summary
from pointdistill.zoo import ZooError, read_manifest, release, sha256_of, verified_file, zoo_root


def clouds(num_points: int) -> np.ndarray:
    return generate_split(per_class=1, num_points=num_points, seed=7)[0][:6]


@pytest.mark.parametrize("name", sorted(read_manifest()))
def test_every_released_model_matches_its_manifest_and_runs(name):
    entry = read_manifest()[name]
    assert sha256_of(verified_file(name)) == entry["sha256"]
    model = pointdistill.load_pretrained(name)
    points = clouds(entry["accuracy"]["num_points"])
    with torch.no_grad():
        logits = np.asarray(model(points))
    assert logits.shape == (len(points), len(model.class_names)) and np.isfinite(logits).all()


@pytest.fixture(scope="module")
def small_zoo(teacher_path, recorded_store, shapes_dir, tmp_path_factory):
    root, runs = tmp_path_factory.mktemp("zoo"), tmp_path_factory.mktemp("runs")
    summary = run_student_job(StudentJob(store=recorded_store, dataset=shapes_dir, out=str(runs / "student"),
                                         train=StudentTrainConfig(epochs=1, batch_size=16, device="cpu")),
                              progress=False)
    export_file(str(runs / "student" / "student.pt"), str(runs / "student.pdbn"))
    release("teacher", teacher_path, "the session teacher", "(test)", root=root)
    release("student", runs / "student.pdbn", "a 1-epoch student", "(test)", root=root,
            checkpoint=runs / "student" / "student.pt")
    return root, summary


def test_a_release_records_the_accuracy_data_and_store_it_came_from(small_zoo, teacher_path, recorded_store):
    root, summary = small_zoo
    manifest = read_manifest(root)
    teacher = load_checkpoint(teacher_path)
    assert manifest["teacher"]["file"] == "teacher.pt" and manifest["teacher"]["store"] is None
    assert manifest["teacher"]["accuracy"]["test_overall_accuracy"] == teacher.metrics["test_overall_accuracy"]
    assert manifest["teacher"]["dataset"] == teacher.dataset and manifest["teacher"]["accuracy"]["epochs"] == 2
    student = manifest["student"]
    assert student["file"] == "student.pdbn" and student["accuracy"]["epochs"] == 1
    assert student["accuracy"]["test_overall_accuracy"] == summary["final_test_overall_accuracy"]
    assert student["store"]["fingerprint"] == store_summary(recorded_store)["fingerprint"]
    assert student["store"]["teacher_sha256"] == teacher.weights_sha256()


def test_load_pretrained_returns_a_module_or_the_engine(small_zoo):
    root, _ = small_zoo
    teacher = pointdistill.load_pretrained("teacher", root=root)
    student = pointdistill.load_pretrained("student", root=root)
    points = clouds(128)
    with torch.no_grad():
        assert teacher(points).shape == (6, len(teacher.class_names))
    assert student(points).shape == (6, len(student.class_names))
    assert set(read_manifest(root)) == {"student", "teacher"}


def test_a_damaged_or_unknown_release_is_refused(small_zoo, tmp_path, monkeypatch):
    root = tmp_path / "zoo"
    shutil.copytree(small_zoo[0], root)
    data = bytearray((root / "student.pdbn").read_bytes())
    data[-1] ^= 1
    (root / "student.pdbn").write_bytes(bytes(data))
    with pytest.raises(ZooError, match="student.pdbn: its bytes differ from the manifest's"):
        pointdistill.load_pretrained("student", root=root)
    with pytest.raises(ZooError, match=r"no released model 'studnet' .*released: student, teacher"):
        pointdistill.load_pretrained("studnet", root=root)
    monkeypatch.setenv("POINTDISTILL_ZOO", str(root))
    assert zoo_root() == root
    (root / "teacher.pt").unlink()
    with pytest.raises(ZooError, match="teacher.pt: the file of released model 'teacher' is missing"):
        pointdistill.load_pretrained("teacher")

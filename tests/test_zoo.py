"""Released models: every file in the zoo matches its manifest and runs; loading checks the bytes."""

import shutil

import numpy as np
import pytest
import torch

import pointdistill
from pointdistill.data.generated import generate_split
from pointdistill.distill import StudentJob, StudentTrainConfig, run_student_job
from pointdistill.engine.export import export_file
from pointdistill.zoo import ZooError, read_manifest, sha256_of, verified_file, write_manifest_entry, zoo_root


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
    root = tmp_path_factory.mktemp("zoo")
    shutil.copy(teacher_path, root / "teacher.pt")
    run_student_job(StudentJob(store=recorded_store, dataset=shapes_dir, out=str(root / "run"),
                               train=StudentTrainConfig(epochs=1, batch_size=16, device="cpu")), progress=False)
    export_file(str(root / "run" / "student.pt"), str(root / "student.pdbn"))
    for name, file in (("teacher", "teacher.pt"), ("student", "student.pdbn")):
        write_manifest_entry(root, name, file, description=name, command="(test)", dataset={},
                             accuracy={"test_overall_accuracy": 0.5, "num_points": 128})
    return root


def test_load_pretrained_returns_a_module_or_the_engine(small_zoo):
    teacher = pointdistill.load_pretrained("teacher", root=small_zoo)
    student = pointdistill.load_pretrained("student", root=small_zoo)
    points = clouds(128)
    with torch.no_grad():
        assert teacher(points).shape == (6, len(teacher.class_names))
    assert student(points).shape == (6, len(student.class_names))
    assert set(read_manifest(small_zoo)) == {"student", "teacher"}


def test_a_damaged_or_unknown_release_is_refused(small_zoo, tmp_path, monkeypatch):
    root = tmp_path / "zoo"
    shutil.copytree(small_zoo, root)
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

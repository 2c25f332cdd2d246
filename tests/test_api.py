"""The Python API as the README documents it: one call to load a model, an exported model or a
record store; the README's example block runs as written."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import pointdistill
from pointdistill.data import load_dataset
from pointdistill.distill import StudentJob, StudentTrainConfig, run_student_job
from pointdistill.engine import Engine, load_network
from pointdistill.engine.export import export_file
from pointdistill.models import load_checkpoint
from pointdistill.records import RecordStoreError

README = Path(__file__).parents[1] / "README.md"


@pytest.fixture(scope="module")
def demo_dir(shapes_dir, teacher_path, recorded_store, tmp_path_factory):
    """The layout `make demo` leaves (store/demo/...), from the session's small artifacts."""
    root = tmp_path_factory.mktemp("demo-layout")
    demo = root / "store" / "demo"
    demo.mkdir(parents=True)
    (demo / "shapes").symlink_to(shapes_dir)
    (demo / "teacher.pt").symlink_to(teacher_path)
    (demo / "records.zarr").symlink_to(recorded_store)
    job = StudentJob(store=recorded_store, dataset=shapes_dir, out=str(demo / "student"),
                     train=StudentTrainConfig(epochs=1, batch_size=16, device="cpu"))
    run_student_job(job, progress=False)
    export_file(str(demo / "student" / "student.pt"), str(demo / "student.pdbn"))
    return root


def _readme_python_block() -> str:
    section = README.read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_readme_example_runs_as_written(demo_dir, capsys, monkeypatch):
    monkeypatch.chdir(demo_dir)
    exec(compile(_readme_python_block(), str(README), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3
    assert float(printed[1]) < 1e-4  # the engine gives the PyTorch student's logits
    assert float(re.search(r"tensor\(([\d.e-]+)\)", printed[2]).group(1)) < 0.05  # float16 records
    recorded = pointdistill.open_records("store/demo/records-a2.zarr")  # recorded in the script
    assert recorded.attrs["status"] == "complete" and recorded.layout.augmentations == 2


def test_load_model_is_the_checkpoint_as_a_module_returning_logits(demo_dir, shapes_dir):
    path = demo_dir / "store" / "demo" / "student" / "student.pt"
    model = pointdistill.load_model(str(path))
    checkpoint = load_checkpoint(str(path))
    points = load_dataset(shapes_dir, "test", model.num_points).points[:5]
    with torch.no_grad():
        expected = checkpoint.build_model()(torch.from_numpy(points))
        logits = model(points)  # NumPy in
        assert torch.equal(logits, expected.logits)
        assert torch.equal(model(torch.from_numpy(points).double()), logits)  # any float tensor
        assert torch.equal(model.pooled(points), expected.pooled)
    assert not model.training and logits.shape == (5, len(checkpoint.class_names))
    assert model.predict(points) == [checkpoint.class_names[i] for i in expected.logits.argmax(1).tolist()]


def test_a_loaded_model_keeps_no_graph_unless_the_points_ask_for_gradients(demo_dir, shapes_dir):
    model = pointdistill.load_model(str(demo_dir / "store" / "demo" / "teacher.pt"))
    points = torch.from_numpy(load_dataset(shapes_dir, "test", model.num_points).points[:3])
    logits = model(points)
    assert not logits.requires_grad and not model.pooled(points).requires_grad
    assert logits.numpy().shape == (3, len(model.class_names))  # straight to NumPy
    points.requires_grad_(True)  # a saliency map: d logit / d point
    model(points)[0, 0].backward()
    assert points.grad is not None and points.grad[1:].abs().sum() == 0 < points.grad[0].abs().sum()


def test_load_engine_runs_the_exported_file_on_numpy_points(demo_dir, shapes_dir):
    path = demo_dir / "store" / "demo" / "student.pdbn"
    engine = pointdistill.load_engine(str(path))
    points = load_dataset(shapes_dir, "test", 128).points[:5]
    np.testing.assert_array_equal(engine(points), Engine(load_network(path))(points))
    assert engine.class_names == load_network(path).class_names


def test_open_records_reads_what_the_store_holds(recorded_store):
    records = pointdistill.open_records(recorded_store)
    group = zarr.open_group(recorded_store, mode="r")
    assert len(records) == 72 and records.complete and records.layout.augmentations == 3
    assert records.class_names == group.attrs["dataset"]["class_names"]
    shapes = [70, 3, 17, 3]  # across chunks, unordered, repeated
    batch = records.read(shapes)
    np.testing.assert_array_equal(batch.shapes, shapes)
    for name in ("params", "logits", "pooled", "labels"):
        np.testing.assert_array_equal(getattr(batch, name), group[name][:][shapes], err_msg=name)
    assert batch.logits.dtype == np.float32 and batch.labels.dtype == np.int64
    assert records.read(5).params.shape == (1, 3, 6)
    np.testing.assert_array_equal(records.read(slice(60, None)).shapes, np.arange(60, 72))


def test_open_records_refuses_what_is_not_recorded_or_damaged(recorded_store, tmp_path):
    store = tmp_path / "records.zarr"
    shutil.copytree(recorded_store, store)
    zarr.open_group(str(store), mode="r+")["done"][1] = 0
    records = pointdistill.open_records(str(store))
    assert not records.complete
    assert records.read([0, 15]).shapes.tolist() == [0, 15]  # chunk 0 is whole
    with pytest.raises(RecordStoreError, match=r"chunk 1 \(shapes 16..31\) is not recorded yet \(4/5"):
        records.read([0, 16])
    os.remove(store / "pooled" / "c" / "2" / "0" / "0")
    with pytest.raises(RecordStoreError, match="pooled chunk 2"):
        pointdistill.open_records(str(store)).read(40)
    with pytest.raises(RecordStoreError, match="no record store here"):
        pointdistill.open_records(str(tmp_path / "absent.zarr"))


def test_import_pointdistill_stays_light():
    code = "import sys, pointdistill; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"

"""Shared fixtures: a small generated dataset and a small trained teacher, made once per session."""

import os
import tempfile

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="pointdistill-prefect-home-"))
os.environ["POINTDISTILL_CATALOG"] = tempfile.mkdtemp(prefix="pointdistill-catalog-")

import pytest  # noqa: E402

from pointdistill.data import load_dataset, write_generated_dataset  # noqa: E402
from pointdistill.models import DGCNNConfig, PointNetConfig, model_spec, save_checkpoint  # noqa: E402
from pointdistill.records import RecordingJob, record_in_process  # noqa: E402
from pointdistill.train import TrainConfig, train_classifier  # noqa: E402

NUM_POINTS = 128
SMALL_TEACHER = dict(point_widths=(16, 16, 32, 32, 64), head_widths=(32, 16))


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """Generated dataset: 12 classes x 6 train / 2 test shapes of 256 points."""
    return str(write_generated_dataset(tmp_path_factory.mktemp("shapes"), train_per_class=6,
                                       test_per_class=2, num_points=256, seed=0))


@pytest.fixture(scope="session")
def teacher_path(shapes_dir, tmp_path_factory):
    """A small PointNet (with both T-Nets) trained for 2 epochs on ``shapes_dir``."""
    train_set = load_dataset(shapes_dir, "train", NUM_POINTS)
    test_set = load_dataset(shapes_dir, "test", NUM_POINTS)
    spec = model_spec("pointnet", PointNetConfig(num_classes=train_set.num_classes, input_transform=True,
                                                 feature_transform=True, **SMALL_TEACHER))
    checkpoint = train_classifier(spec, train_set, test_set, TrainConfig(epochs=2, batch_size=16, device="cpu"),
                                  progress=False)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, checkpoint)
    return str(path)


@pytest.fixture(scope="session")
def prefect_api():
    """A real temporary Prefect server for flow tests, exported to subprocesses and Dask workers."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.runtime import EMBEDDED_STARTUP_TIMEOUT_S

    with prefect_test_harness(server_startup_timeout=EMBEDDED_STARTUP_TIMEOUT_S):  # the same wait as a user's
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(scope="session")
def recorded_store(teacher_path, shapes_dir, tmp_path_factory):
    """A complete record store of the session teacher: 72 shapes x 3 augmentations, chunks of 16."""
    job = RecordingJob(teacher=teacher_path, dataset=shapes_dir, augmentations=3, chunk_shapes=16, seed=5,
                       store=str(tmp_path_factory.mktemp("store") / "records.zarr"))
    record_in_process(job)
    return job.store


@pytest.fixture(scope="session")
def dgcnn_store(shapes_dir, tmp_path_factory):
    """A complete store recorded by a small DGCNN (pooled width 48: max and mean of a 24-wide
    embedding) trained for 2 epochs on ``shapes_dir`` at 64 points: 72 shapes x 2 augmentations."""
    root = tmp_path_factory.mktemp("dgcnn")
    train_set = load_dataset(shapes_dir, "train", 64)
    config = DGCNNConfig(num_classes=train_set.num_classes, k=5, edge_widths=(8, 8, 16), embed_width=24,
                         head_widths=(16,))
    checkpoint = train_classifier(model_spec("dgcnn", config), train_set, load_dataset(shapes_dir, "test", 64),
                                  TrainConfig(epochs=2, batch_size=16, device="cpu"), progress=False)
    save_checkpoint(root / "dgcnn.pt", checkpoint)
    job = RecordingJob(teacher=str(root / "dgcnn.pt"), dataset=shapes_dir, store=str(root / "records.zarr"),
                       augmentations=2, chunk_shapes=24)
    record_in_process(job)
    return job.store

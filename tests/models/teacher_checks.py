"""Checks every teacher backbone passes (imported by its test module): it trains, rebuilds from
its stored spec, and is recorded and replayed."""

import json

import torch

from pointdistill.data import load_dataset
from pointdistill.models import create_model, load_checkpoint, save_checkpoint
from pointdistill.records import RecordingJob, ReplayLoader, record_in_process
from pointdistill.train import TrainConfig, train_classifier


def assert_trains_and_rebuilds(spec: dict, points: torch.Tensor, labels: torch.Tensor, steps: int = 15) -> None:
    """Adam at 1e-2 halves the loss in ``steps`` steps; the spec as stored (JSON) rebuilds the
    same model, giving the same logits in eval mode."""
    torch.manual_seed(0)
    spec = json.loads(json.dumps(spec))
    model = create_model(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(points).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    rebuilt = create_model(spec)
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    assert torch.equal(rebuilt(points).logits, model(points).logits)


def assert_recorded_and_replayed(spec: dict, shapes_dir: str, tmp_path, pooled_width: int) -> None:
    """Trained for an epoch on ``shapes_dir`` at 64 points, recorded (2 augmentations), the store
    replays its name, pooled features ``pooled_width`` wide and its logits (float16)."""
    train_set = load_dataset(shapes_dir, "train", 64)
    checkpoint = train_classifier(spec, train_set, load_dataset(shapes_dir, "test", 64),
                                  TrainConfig(epochs=1, batch_size=16, device="cpu"), progress=False)
    save_checkpoint(tmp_path / "teacher.pt", checkpoint)
    job = RecordingJob(teacher=str(tmp_path / "teacher.pt"), dataset=shapes_dir,
                       store=str(tmp_path / "records.zarr"), augmentations=2, chunk_shapes=24)
    record_in_process(job)
    loader = ReplayLoader(job.store, train_set, batch_size=8)
    assert loader.attrs["teacher"]["model"]["name"] == spec["name"]
    batch = next(iter(loader.epoch(0)))
    assert batch.teacher_pooled.shape == (8, pooled_width)
    model = load_checkpoint(str(tmp_path / "teacher.pt")).build_model().eval()
    with torch.no_grad():
        live = model(batch.points)
    torch.testing.assert_close(batch.teacher_logits, live.logits, rtol=1e-2, atol=1e-2)  # stored as float16

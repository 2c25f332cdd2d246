"""The Python API: a trained model, an exported model or a record store, each in one call.

    import pointdistill
    teacher = pointdistill.load_model("teacher.pt")        # torch: teacher(points) -> logits
    engine = pointdistill.load_engine("student.pdbn")      # numpy: engine(points) -> logits
    records = pointdistill.open_records("records.zarr")    # records.read(shapes) -> Records
    student = pointdistill.load_pretrained(NAME)            # a released model (models/), verified
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pointdistill.engine.model_file import load_network
from pointdistill.engine.runtime import Engine
from pointdistill.models import Checkpoint, load_checkpoint, resolve_device
from pointdistill.records.reader import RecordStore
from pointdistill.zoo import load_pretrained

__all__ = ["Classifier", "load_engine", "load_model", "load_pretrained", "open_records"]


class Classifier(nn.Module):
    """A trained teacher or student in eval mode: ``classifier(points)`` -> logits.

    points: float32 [B, N, 3] (a tensor or a NumPy array, on any device: moved to the model's);
    logits: float32 [B, C], C = len(class_names). ``pooled(points)`` gives the global feature
    [B, D] after aggregation; ``checkpoint`` holds the spec, dataset fingerprint and metrics.
    No autograd graph is kept (outputs convert with ``.numpy()``, and a 1024-point teacher does
    not hold every layer's activations) unless ``points`` is a tensor that requires grad: then
    the outputs carry gradients to it and to the weights (``network`` is the plain module)."""

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device = "cpu"):
        super().__init__()
        self.checkpoint = checkpoint
        self.class_names = list(checkpoint.class_names)
        self.network = checkpoint.build_model().to(resolve_device(str(device)))
        self.eval()

    @property
    def num_points(self) -> int:
        """Points per cloud of the data it was trained on."""
        return int(self.checkpoint.dataset["num_points"])

    def _points(self, points) -> torch.Tensor:
        if not torch.is_tensor(points):
            points = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
        return points.to(device=next(self.network.parameters()).device, dtype=torch.float32)

    def _outputs(self, points):
        with torch.set_grad_enabled(torch.is_tensor(points) and points.requires_grad):
            return self.network(self._points(points))

    def forward(self, points) -> torch.Tensor:
        return self._outputs(points).logits

    def pooled(self, points) -> torch.Tensor:
        return self._outputs(points).pooled

    def predict(self, points) -> list[str]:
        """The predicted class name of every cloud."""
        return [self.class_names[i] for i in self(points).argmax(dim=1).tolist()]


def load_model(path: str, device: str = "cpu") -> Classifier:
    """A teacher or student checkpoint (local path or fsspec URL; read with
    ``weights_only=True``) as a Classifier on ``device`` ("cpu", "cuda", "auto")."""
    return Classifier(load_checkpoint(path), device)


def load_engine(path: str, kernel: str | None = None) -> Engine:
    """An exported ``.pdbn`` model ready to run on the CPU: ``engine(points float32 [B, N, 3])``
    -> logits float32 [B, C]; ``engine.class_names``; ``kernel`` as POINTDISTILL_ENGINE_KERNEL."""
    return Engine(load_network(path), kernel)


def open_records(uri: str, storage_options: dict | None = None) -> RecordStore:
    """A record store (local path or fsspec URL), read-only."""
    return RecordStore(uri, storage_options)

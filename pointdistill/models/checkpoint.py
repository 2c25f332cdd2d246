"""Checkpoints: state dict + full model spec + class names + training-data fingerprint.

Stored with ``torch.save`` as plain containers and tensors, so ``torch.load(weights_only=True)``
reads them: no pickled code ever runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pointdistill.models.registry import create_model
from pointdistill.run_directory import torch_bytes
from pointdistill.storage import write_bytes_atomically
from pointdistill.storage import open_file

CHECKPOINT_FORMAT = "pointdistill.checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a pointdistill checkpoint."""


@dataclass
class Checkpoint:
    """spec: the model spec; dataset: {name, fingerprint, num_points}; metrics: final numbers."""

    spec: dict
    state_dict: dict[str, torch.Tensor]
    class_names: list[str]
    dataset: dict
    metrics: dict = field(default_factory=dict)

    def build_model(self) -> nn.Module:
        """The model in eval mode with the stored weights. The spec is first built without memory
        (meta device) and its tensor shapes checked against the stored ones, so a spec edited to
        enormous widths is refused instead of allocated."""
        with torch.device("meta"):
            skeleton = create_model(self.spec)
        expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
        stored = {k: tuple(v.shape) for k, v in self.state_dict.items()}
        if expected != stored:
            differ = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
            raise CheckpointError(
                "checkpoint spec and weights disagree: " + "; ".join(
                    f"{k}: spec {list(expected[k]) if k in expected else 'absent'}, weights "
                    f"{list(stored[k]) if k in stored else 'absent'}" for k in differ[:3])
                + (" ..." if len(differ) > 3 else ""))
        model = create_model(self.spec)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def weights_sha256(self) -> str:
        return weights_sha256(self.state_dict)


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the state dict in sorted key order: for each entry the UTF-8 line
    "key|dtype|shape" then the tensor's raw little-endian bytes (C order)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{list(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    """Write atomically: a partial file never stands at ``path``; a full disk raises
    DiskFullError and leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": checkpoint.spec,
        "state_dict": {k: v.detach().cpu() for k, v in checkpoint.state_dict.items()},
        "class_names": list(checkpoint.class_names),
        "dataset": checkpoint.dataset,
        "metrics": checkpoint.metrics,
    }
    write_bytes_atomically(path, torch_bytes(payload))


def load_checkpoint(path: str) -> Checkpoint:
    """Read a checkpoint from a local path or fsspec URL with ``weights_only=True``."""
    try:
        with open_file(str(path), "rb") as f:
            payload = torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise CheckpointError(f"{path}: checkpoint file not found") from error
    except Exception as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a pointdistill checkpoint (no format {CHECKPOINT_FORMAT!r})")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')!r}, expected {CHECKPOINT_VERSION}")
    return Checkpoint(
        spec=payload["model"], state_dict=payload["state_dict"], class_names=payload["class_names"],
        dataset=payload["dataset"], metrics=payload.get("metrics", {}),
    )

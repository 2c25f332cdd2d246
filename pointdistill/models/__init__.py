"""Teachers and students, built by name from the spec stored beside their weights."""

from pointdistill.models import binary_dgcnn as _binary_dgcnn  # noqa: F401  (registers "binary_dgcnn")
from pointdistill.models import binary_pointnet as _binary_pointnet  # noqa: F401  (registers "binary_pointnet")
from pointdistill.models import binary_pointnet2 as _binary_pointnet2  # noqa: F401  (registers "binary_pointnet2_ssg")
from pointdistill.models import dgcnn as _dgcnn  # noqa: F401  (registers "dgcnn")
from pointdistill.models import pointnet as _pointnet  # noqa: F401  (registers "pointnet")
from pointdistill.models import pointnet2 as _pointnet2  # noqa: F401  (registers "pointnet2_ssg")
from pointdistill.models.binary_pointnet import BinaryPointNetConfig
from pointdistill.models.checkpoint import (
    Checkpoint, CheckpointError, load_checkpoint, save_checkpoint, weights_sha256,
)
from pointdistill.models.dgcnn import DGCNNConfig
from pointdistill.models.inference import batched_forward, resolve_device
from pointdistill.models.pointnet import PointNetConfig
from pointdistill.models.pointnet2 import PointNet2Config
from pointdistill.models.registry import MODELS, ModelOutput, create_model, model_spec, register_model

__all__ = [
    "MODELS", "BinaryPointNetConfig", "Checkpoint", "CheckpointError", "DGCNNConfig", "ModelOutput", "PointNet2Config",
    "PointNetConfig",
    "batched_forward", "create_model", "load_checkpoint", "model_spec", "register_model", "resolve_device",
    "save_checkpoint", "weights_sha256",
]

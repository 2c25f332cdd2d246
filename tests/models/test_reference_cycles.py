"""No training step of a registered model leaves a reference cycle: its output is freed as soon as
nothing refers to it, without Python's cycle collector. (The fused EdgeConv once kept its own
output for backward: a ModelNet40 DGCNN teacher grew by about 1 GB every 10 s until it was killed
for memory.) Each model trains on its fast CPU kernels where it has them."""

import gc

import pytest
import torch
from torch.autograd.function import BackwardCFunction

from pointdistill.binary import QUANTIZERS
from pointdistill.distill import student_spec
from pointdistill.models import DGCNNConfig, PointNet2Config, PointNetConfig, create_model, model_spec

TEACHERS = {
    "pointnet": PointNetConfig(num_classes=4, point_widths=(8, 8, 8, 16, 32), head_widths=(16,),
                               input_transform=True, feature_transform=True),
    "dgcnn": DGCNNConfig(num_classes=4, k=5, edge_widths=(8, 16), embed_width=32, head_widths=(16,)),
    "pointnet2_ssg": PointNet2Config(num_classes=4, centres=(16, 4), radii=(0.6, 1.2), neighbours=(6, 3),
                                     level_widths=((8, 16), (16, 24)), global_widths=(24, 32), head_widths=(16,)),
}


def _left_in_cycles(spec: dict) -> list:
    """One training step of ``spec``'s model (fast kernels), then nothing referring to its output:
    the tensors and autograd contexts that only the cycle collector would free. (Other garbage,
    such as a background thread's of an earlier test, is not the step's and is not counted.)"""
    torch.manual_seed(0)
    model = create_model(spec).train()
    if hasattr(model, "training_kernel"):
        model.training_kernel = "fast"
    points = torch.randn(6, 40, 3, generator=torch.Generator().manual_seed(1))
    gc.collect()
    gc.disable()
    try:
        logits = model(points).logits
        logits.sum().backward()
        del logits
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        return [type(o).__name__ for o in gc.garbage if isinstance(o, (torch.Tensor, BackwardCFunction))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("backbone", sorted(TEACHERS))
def test_teacher_step_leaves_no_cycle(backbone):
    assert _left_in_cycles(model_spec(backbone, TEACHERS[backbone])) == []


@pytest.mark.parametrize("aggregation", ["max", "ema"])
@pytest.mark.parametrize("quantizer", sorted(QUANTIZERS))
@pytest.mark.parametrize("backbone", sorted(TEACHERS))
def test_student_step_leaves_no_cycle(backbone, quantizer, aggregation):
    shortcuts = {"shortcuts": True, "head_shortcuts": True} if backbone == "pointnet" else {}
    spec = student_spec(model_spec(backbone, TEACHERS[backbone]), quantizer, aggregation, backbone=backbone,
                        **shortcuts)
    assert _left_in_cycles(spec) == []

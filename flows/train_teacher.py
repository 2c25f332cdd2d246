"""The `train-teacher` flow: train a full-precision classifier and save its checkpoint."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.parameters import (
    Count, Device, ExistingPath, Help, Kernel, Overwrite, Positive, Progress, Resume, documented, existing_mode,
)
from pointdistill.train import TeacherJob, TrainConfig, run_teacher_job


@flow(name="train-teacher")
@documented
def train_teacher(
    dataset: Annotated[ExistingPath, Help("dataset directory (npz or ModelNet40 HDF5 layout)")],
    out: Annotated[str, Help("checkpoint path to write")],
    num_points: Annotated[Count, Help("first points of each shape used")] = 1024,
    point_widths: Annotated[list[Count], Help("widths of the per-point layers; the last is the pooled size")] = [  # noqa: B006
        64, 64, 64, 128, 1024],
    head_widths: Annotated[list[Count], Help("widths of the classifier's hidden layers")] = [512, 256],  # noqa: B006
    input_transform: Annotated[bool, Help("add the input T-Net")] = False,
    feature_transform: Annotated[bool, Help("add the feature T-Net")] = False,
    epochs: Annotated[Count, Help("training epochs (cosine schedule over all of them)")] = 20,
    batch_size: Annotated[Count, Help("shapes per training step")] = 32,
    lr: Annotated[Positive, Help("Adam learning rate at the start of the cosine schedule")] = 1e-3,
    seed: Annotated[int, Help("seed of initialisation, augmentations and shuffling")] = 0,
    device: Device = "auto",
    kernel: Kernel = "fast",
    resume: Resume = False,
    overwrite: Overwrite = False,
    progress: Progress = False,
) -> dict:
    """Train a PointNet teacher on ``dataset``'s train split, evaluate on its test split
    (overall and mean-class accuracy) and save the checkpoint at ``out``, with
    ``<out>.metrics.parquet`` and ``<out>.curves.png`` beside it. Returns the final test accuracies and the paths written (``outputs``).
    An existing ``out`` is refused unless ``resume`` (continue an interrupted run from its last
    finished epoch) or ``overwrite``."""
    job = TeacherJob(
        dataset=dataset, out=out, num_points=num_points, point_widths=tuple(point_widths),
        head_widths=tuple(head_widths), input_transform=input_transform, feature_transform=feature_transform,
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, kernel=kernel),
        existing=existing_mode(resume, overwrite))
    if kernel == "fast" and (input_transform or feature_transform):
        get_run_logger().info("kernel fast: the T-Nets take the reference (autograd) path; "
                              "the widest point layer is fused")
    result = {k: v for k, v in run_teacher_job(job, progress=progress).items() if k not in ("history", "settings")}
    get_run_logger().info("teacher saved to %s: test OA %.4f, mean-class %.4f", out,
                          result["test_overall_accuracy"], result["test_mean_class_accuracy"])
    accuracy = {k: v for k, v in result.items() if k.startswith("test_")}
    create_table_artifact(key="teacher-accuracy", table=[{"checkpoint": out, "epochs": epochs, **accuracy}])
    return result

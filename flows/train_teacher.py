"""The `train-teacher` flow: train a full-precision classifier and save its checkpoint."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.parameters import (
    Count, Device, ExistingPath, Help, Kernel, Overwrite, Positive, Progress, Resume, Teacher, documented,
    existing_mode,
)
from pointdistill.models.teacher_options import TeacherOptions, read_model_fields
from pointdistill.train import TeacherJob, TrainConfig, run_teacher_job


@flow(name="train-teacher")
@documented
def train_teacher(
    dataset: Annotated[ExistingPath, Help("dataset directory (npz or ModelNet40 HDF5 layout)")],
    out: Annotated[str, Help("checkpoint path to write")],
    num_points: Annotated[Count, Help("first points of each shape used")] = 1024,
    model: Annotated[Teacher, Help("the teacher's architecture (registry)")] = "pointnet",
    point_widths: Annotated[list[Count] | None, Help(
        "widths of the per-point layers, the last the pooled embedding (pointnet: its shared MLP, default "
        "64,64,64,128,1024; dgcnn: the EdgeConv widths, then the embedding, default 64,64,128,256,1024)")] = None,
    head_widths: Annotated[list[Count] | None, Help("widths of the classifier's hidden layers (default 512,256)")] = None,
    neighbours: Annotated[Count | None, Help("dgcnn: neighbours per point in each kNN graph (default 20)")] = None,
    centres: Annotated[list[Count] | None, Help(
        "pointnet2_ssg: points sampled by each set abstraction level (default 512,128, for clouds of at "
        "least 512 points)")] = None,
    input_transform: Annotated[bool, Help("pointnet: add the input T-Net")] = False,
    feature_transform: Annotated[bool, Help("pointnet: add the feature T-Net")] = False,
    architecture: Annotated[ExistingPath | None, Help(
        "a JSON or YAML file of the model config's own fields over its defaults (e.g. pointnet2_ssg's "
        "level_widths, global_widths, neighbours, radii); a field an option above also sets is refused")] = None,
    epochs: Annotated[Count, Help("training epochs (cosine schedule over all of them)")] = 20,
    batch_size: Annotated[Count, Help("shapes per training step")] = 32,
    lr: Annotated[Positive, Help("Adam learning rate at the start of the cosine schedule")] = 1e-3,
    seed: Annotated[int, Help("seed of initialisation, augmentations and shuffling")] = 0,
    device: Device = "auto",
    kernel: Kernel = "fast",
    eval_every: Annotated[Count, Help("test accuracy after every N-th epoch and the last; the epochs between "
                                      "have none")] = 1,
    resume: Resume = False,
    overwrite: Overwrite = False,
    progress: Progress = False,
) -> dict:
    """Train a float teacher (PointNet, DGCNN or PointNet++ SSG) on ``dataset``'s train split, evaluate on its test split
    (overall and mean-class accuracy) and save the checkpoint at ``out``, with
    ``<out>.metrics.parquet`` and ``<out>.curves.png`` beside it. Returns the final test accuracies and the paths written (``outputs``).
    An existing ``out`` is refused unless ``resume`` (continue an interrupted run from its last
    finished epoch) or ``overwrite``."""
    options = TeacherOptions(point_widths=tuple(point_widths) if point_widths else None,
                             head_widths=tuple(head_widths) if head_widths else None, neighbours=neighbours,
                             centres=tuple(centres) if centres else None,
                             input_transform=input_transform, feature_transform=feature_transform,
                             model_fields=read_model_fields(architecture) if architecture else None)
    job = TeacherJob(
        dataset=dataset, out=out, num_points=num_points, model=model, options=options,
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, kernel=kernel,
                          eval_every=eval_every),
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

"""The `train-student` flow: train a binary student by replaying a record store."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.parameters import (
    Aggregation, Catalog, Count, Device, ExistingPath, Fraction, Help, KdWeight, Kernel, NonNegative, NonNegativeInt,
    OneOf, Overwrite, Positive, Progress, Quantizer, Regularizer, RegWeight, Resume, SelfWeight, StudentBackbone,
    Temperature, documented, existing_mode,
)
from pointdistill.distill import StudentJob, StudentTrainConfig, run_student_job
from pointdistill.losses import LossConfig
from pointdistill.records import find_store


@flow(name="train-student")
@documented
def train_student(
    dataset: Annotated[ExistingPath, Help("the dataset directory the store was recorded on")],
    out: Annotated[str, Help("output directory: student.pt, metrics.parquet, curves.png, summary.json")],
    store: Annotated[ExistingPath | None, OneOf("source", required=True),
                     Help("record store path or URL (read, never written)")] = None,
    teacher_sha: Annotated[str | None, OneOf("source", required=True),
                           Help("find the store in the catalog by the teacher's weights sha256 (a prefix will "
                                "do), with dataset_fingerprint")] = None,
    dataset_fingerprint: Annotated[str | None, Help("with teacher_sha: the dataset fingerprint (a prefix will do)")] = None,
    catalog: Catalog = None,
    backbone: Annotated[StudentBackbone, Help(
        "the student's architecture, binarised (the teacher's layout where the teacher is one too; else "
        "BiPointNet's widths for pointnet)")] = "pointnet",
    quantizer: Annotated[Quantizer, Help("binarisation method of the student's binary layers")] = "lsr",
    aggregation: Annotated[Aggregation, Help("global pooling over points")] = "ema",
    point_widths: Annotated[list[Count] | None, Help(
        "pointnet student: per-point layer widths (default: a PointNet teacher's)")] = None,
    head_widths: Annotated[list[Count] | None, Help("classifier hidden widths (default: the teacher's)")] = None,
    dropout: Annotated[Fraction, Help(
        "probability of dropping a unit before the student's float classifier, in training (0 = none)")] = 0.0,
    shortcuts: Annotated[bool, Help(
        "pointnet student: real-valued shortcuts around its hidden binary point layers (Bi-Real Net's): "
        "x <- x + Hardtanh(BN(binary(x))), the input repeated where a layer widens it")] = False,
    head_shortcuts: Annotated[bool, Help(
        "pointnet student: the same around its binary head layers, on the pooled feature (its channels "
        "averaged in groups where a layer narrows it)")] = False,
    learned_thresholds: Annotated[bool, Help(
        "pointnet student with shortcuts: each binary layer whose input a shortcut carries reads sign(x - t), "
        "t a learned threshold per input channel (ReActNet's RSign), x carried on unchanged")] = False,
    kd_weight: KdWeight = 0.0,
    temperature: Temperature = 2.0,
    reg_weight: RegWeight = 0.0,
    regularizer: Regularizer = "matrix-1",
    self_weight: SelfWeight = 0.0,
    epochs: Annotated[Count, Help("training epochs (cosine schedule over all of them)")] = 20,
    lr: Annotated[Positive, Help("Adam learning rate at the start of the cosine schedule")] = 1e-3,
    weight_decay: Annotated[NonNegative, Help(
        "Adam's L2 weight decay on every trained parameter of the student (0 = none)")] = 0.0,
    batch_size: Annotated[Count, Help("records per training step")] = 32,
    device: Device = "auto",
    seed: Annotated[int, Help("seed of initialisation, record order and augmentation choice")] = 0,
    kernel: Kernel = "fast",
    eval_every: Annotated[Count, Help(
        "test (and validation) accuracy after every N-th epoch and the last; the epochs between have "
        "none (a student that does not export is tested with the float forward, which costs time)")] = 1,
    average_from: Annotated[NonNegativeInt, Help(
        "0 = off; else the student is the uniform average of its weights (and BatchNorm statistics) at the end "
        "of each epoch from this one to the last (stochastic weight averaging), tested as such beside the live "
        "weights")] = 0,
    online_teacher: Annotated[ExistingPath | None, Help("baseline: run this teacher checkpoint live instead of "
                                               "replaying the store")] = None,
    use_completed_part: Annotated[bool, Help("train on the done chunks of an incomplete store")] = False,
    validation_fraction: Annotated[Fraction, Help(
        "share of each training class held out of replay and evaluated on every epoch, to choose "
        "settings without the test set (the same shapes in every run; 0 = none)")] = 0.0,
    resume: Resume = False,
    overwrite: Overwrite = False,
    progress: Progress = False,
) -> dict:
    """Train a binary student (PointNet by default) from the records at ``store`` — or the newest complete store in the
    catalog of teacher ``teacher_sha`` on ``dataset_fingerprint`` (prefixes allowed) — never
    loading the teacher, unless ``online_teacher`` asks for the live-teacher baseline. Writes
    checkpoint, metrics.parquet, curves.png and summary.json under ``out``, together; returns the
    summary. An existing ``out`` is refused unless ``resume`` (continue an interrupted run from
    its last finished epoch) or ``overwrite``."""
    if store is None:
        if not (teacher_sha and dataset_fingerprint):
            raise ValueError("give a store URI, or teacher_sha and dataset_fingerprint to find one in the catalog")
        store = find_store(teacher_sha, dataset_fingerprint, catalog)
        get_run_logger().info("catalog: using %s", store)
    job = StudentJob(
        store=store, dataset=dataset, out=out, backbone=backbone, quantizer=quantizer, aggregation=aggregation,
        point_widths=tuple(point_widths) if point_widths else None,
        head_widths=tuple(head_widths) if head_widths else None, dropout=dropout, shortcuts=shortcuts,
        head_shortcuts=head_shortcuts, learned_thresholds=learned_thresholds,
        loss=LossConfig(kd_weight=kd_weight, temperature=temperature, reg_weight=reg_weight,
                        regularizer=regularizer, self_weight=self_weight),
        train=StudentTrainConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                                 device=device, seed=seed, kernel=kernel, eval_every=eval_every,
                                 average_from=average_from),
        online_teacher=online_teacher, use_completed_part=use_completed_part,
        validation_fraction=validation_fraction,
        existing=existing_mode(resume, overwrite),
    )
    summary = run_student_job(job, progress=progress)
    get_run_logger().info("student %s: final test OA %.4f (teacher %.4f), %s bytes float32 -> %s bit-packed", out,
                          summary["final_test_overall_accuracy"], summary["teacher_test_overall_accuracy"] or 0,
                          summary["student_bytes"]["float_bytes"], summary["student_bytes"]["packed_bytes"])
    create_table_artifact(key="student-summary", table=[{
        "student": f"{backbone} {quantizer}+{aggregation}", "kd_weight": kd_weight, "reg_weight": reg_weight,
        "final_test_OA": round(summary["final_test_overall_accuracy"], 4),
        "final_test_mAcc": round(summary["final_test_mean_class_accuracy"], 4),
        "teacher_test_OA": summary["teacher_test_overall_accuracy"],
        "float_bytes": summary["student_bytes"]["float_bytes"],
        "packed_bytes": summary["student_bytes"]["packed_bytes"]}])
    return summary

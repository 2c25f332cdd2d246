"""The `train-student` flow: train a binary student by replaying a record store."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.parameters import Aggregation, Count, PoolingNorm, Quantizer, TrainingKernel, existing_mode
from pointdistill.distill import StudentJob, StudentTrainConfig, run_student_job
from pointdistill.losses import LossConfig
from pointdistill.records import find_store


@flow(name="train-student")
def train_student(
    dataset: str,
    out: str,
    store: str | None = None,
    teacher_sha: str | None = None,
    dataset_fingerprint: str | None = None,
    catalog: str | None = None,
    quantizer: Quantizer = "lsr",
    aggregation: Aggregation = "ema",
    point_widths: list[int] | None = None,
    head_widths: list[int] | None = None,
    kd_weight: float = 0.0,
    temperature: float = 2.0,
    reg_weight: float = 0.0,
    regularizer: PoolingNorm = "matrix-1",
    self_weight: float = 0.0,
    epochs: Count = 20,
    lr: float = 1e-3,
    batch_size: Count = 32,
    device: str = "auto",
    seed: int = 0,
    kernel: TrainingKernel = "fast",
    online_teacher: str | None = None,
    use_completed_part: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Train a binary PointNet from the records at ``store`` — or the newest complete store in the
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
        store=store, dataset=dataset, out=out, quantizer=quantizer, aggregation=aggregation,
        point_widths=tuple(point_widths) if point_widths else None,
        head_widths=tuple(head_widths) if head_widths else None,
        loss=LossConfig(kd_weight=kd_weight, temperature=temperature, reg_weight=reg_weight,
                        regularizer=regularizer, self_weight=self_weight),
        train=StudentTrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, device=device, seed=seed,
                                 kernel=kernel),
        online_teacher=online_teacher, use_completed_part=use_completed_part,
        existing=existing_mode(resume, overwrite),
    )
    summary = run_student_job(job, progress=progress)
    get_run_logger().info("student %s: final test OA %.4f (teacher %.4f), %d -> %d bytes", out,
                          summary["final_test_overall_accuracy"], summary["teacher_test_overall_accuracy"] or 0,
                          summary["student_bytes"]["float_bytes"], summary["student_bytes"]["packed_bytes"])
    create_table_artifact(key="student-summary", table=[{
        "student": f"{quantizer}+{aggregation}", "kd_weight": kd_weight, "reg_weight": reg_weight,
        "final_test_OA": round(summary["final_test_overall_accuracy"], 4),
        "final_test_mAcc": round(summary["final_test_mean_class_accuracy"], 4),
        "teacher_test_OA": summary["teacher_test_overall_accuracy"],
        "float_bytes": summary["student_bytes"]["float_bytes"],
        "packed_bytes": summary["student_bytes"]["packed_bytes"]}])
    return summary

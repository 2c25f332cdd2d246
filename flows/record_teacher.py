"""The `record-teacher` flow: run the teacher once over every augmentation, into a Zarr store."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from tqdm.auto import tqdm

from flows.parameters import Catalog, Count, DaskAddress, Device, ExistingPath, Help, NonNegative, Positive, Progress, Workers, documented
from flows.runtime import dask_task_runner
from pointdistill.augment import AugmentPolicy
from pointdistill.records import (
    RecordingJob, RecordingPlan, finalize_store, prepare_store, record_chunk, register_store, store_summary,
)


@task(name="record-chunk", retries=2, retry_delay_seconds=1, cache_policy=NONE)
def record_chunk_task(plan: RecordingPlan, chunk_index: int) -> dict:
    result = record_chunk(plan, chunk_index)
    get_run_logger().info(
        "chunk %d: shapes %d..%d, %d records in %.2fs", result["chunk"], result["start"],
        result["stop"] - 1, result["records"], result["seconds"])
    return result


@flow(name="record-teacher")
@documented
def record_teacher(
    teacher: Annotated[ExistingPath, Help("teacher checkpoint path or URL")],
    dataset: Annotated[ExistingPath, Help("dataset directory; its train split is recorded")],
    store: Annotated[str, Help("record store path or fsspec URL (created, or continued)")],
    augmentations: Annotated[Count, Help("augmentations per shape (A)")] = 10,
    chunk_shapes: Annotated[Count, Help("shapes per chunk = per unit of work")] = 256,
    seed: Annotated[int, Help("seed of the augmentation parameters")] = 0,
    num_points: Annotated[Count | None, Help("points per shape (default: the teacher's training value)")] = None,
    device: Device = "cpu",
    batch_size: Annotated[Count, Help("clouds per teacher forward pass (on the CPU at most 4,096 points' worth)")] = 256,
    scale_low: Annotated[Positive, Help("smallest per-axis scale of an augmentation")] = 2.0 / 3.0,
    scale_high: Annotated[Positive, Help("largest per-axis scale of an augmentation")] = 1.5,
    translate: Annotated[NonNegative, Help("largest per-axis translation of an augmentation")] = 0.2,
    dask_address: DaskAddress = None,
    workers: Workers = 2,
    catalog: Catalog = None,
    progress: Progress = False,
) -> dict:
    """Record ``teacher`` over ``augmentations`` shape-level augmentations of every training
    shape of ``dataset`` into the Zarr store at ``store``; resumes an interrupted recording.

    Chunk tasks run on the Dask cluster at ``dask_address``, else on a LocalCluster of
    ``workers`` processes (``workers=0``: in this process). The complete store is added to the
    catalog (``catalog``, else $POINTDISTILL_CATALOG, else store/catalog). Returns the store summary.
    """
    logger = get_run_logger()
    job = RecordingJob(
        teacher=teacher, dataset=dataset, store=store, augmentations=augmentations,
        chunk_shapes=chunk_shapes, seed=seed, num_points=num_points, device=device, batch_size=batch_size,
        policy=AugmentPolicy(scale_low=scale_low, scale_high=scale_high, translate=translate),
    )
    plan = prepare_store(job)
    logger.info("%s: %d shapes x %d augmentations, %d of %d chunks to record", store,
                plan.layout.num_shapes, augmentations, len(plan.pending), plan.layout.num_chunks)
    if plan.pending:
        with dask_task_runner(dask_address, workers) as runner:
            futures = [runner.submit(record_chunk_task, {"plan": plan, "chunk_index": k}) for k in plan.pending]
            with tqdm(total=len(futures), desc="chunks", unit="chunk", disable=not progress) as bar:
                for future in as_completed(futures):
                    future.result()
                    bar.update(1)
    if not finalize_store(job):
        raise RuntimeError(f"{store}: some chunks are still not done; rerun to fill them")
    summary = store_summary(store)
    register_store(store, catalog)
    logger.info("%s: complete, registered in the catalog", store)
    create_table_artifact(
        key="record-store-summary",
        table=[{"store": store, "N": summary["N"], "A": summary["A"],
                "bytes_per_record": round(summary["bytes_per_record"], 1),
                "teacher_accuracy_on_records": round(summary["teacher_accuracy"], 4),
                "teacher_sha256": summary["teacher"]["weights_sha256"],
                "dataset_fingerprint": summary["dataset"]["fingerprint"]}],
        description="Record store written by record-teacher",
    )
    return summary

"""The `ablation` flow: every student of the paper's grid from one record store, in parallel."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from tqdm.auto import tqdm

from flows.parameters import (
    Aggregation, Count, DaskAddress, ExistingPath, Help, KdWeight, Method, Overwrite, Positive, Progress, Quantizer,
    Regularizer, RegWeight, Resume, SelfWeight, StudentBackbone, Temperature, Workers, documented, existing_mode,
)
from flows.runtime import dask_task_runner
from pointdistill.ablation import AblationConfig, ablation_runs, write_ablation
from pointdistill.distill import StudentJob, run_student_job


@task(name="train-student-run", cache_policy=NONE)
def student_run_task(job: StudentJob) -> dict:
    summary = run_student_job(job, progress=False)
    get_run_logger().info("%s: final test OA %.4f", job.out, summary["final_test_overall_accuracy"])
    return summary


@flow(name="ablation")
@documented
def ablation(
    store: Annotated[ExistingPath, Help("record store path or URL (read, never written)")],
    dataset: Annotated[ExistingPath, Help("the dataset directory the store was recorded on")],
    out: Annotated[str, Help("output directory: ablation.md, ablation.parquet, ablation.png and one run each")],
    epochs: Annotated[Count, Help("training epochs of every run")] = 10,
    lr: Annotated[Positive, Help("Adam learning rate at the start of the cosine schedule")] = 1e-3,
    batch_size: Annotated[Count, Help("records per training step")] = 32,
    seed: Annotated[int, Help("seed of every run")] = 0,
    kd_weight: KdWeight = 0.5,
    temperature: Temperature = 2.0,
    reg_weight: RegWeight = 0.01,
    regularizer: Regularizer = "matrix-1",
    self_weight: SelfWeight = 0.1,
    backbone: Annotated[StudentBackbone, Help("the students' architecture, binarised")] = "pointnet",
    quantizers: Annotated[list[Quantizer], Help("quantizers of the grid")] = [  # noqa: B006 (Prefect parameter default)
        "bnn", "irnet", "xnor", "lsr"],
    aggregations: Annotated[list[Aggregation], Help("aggregations of the grid")] = ["max", "ema"],  # noqa: B006
    methods: Annotated[list[Method] | None, Help("the grid's rows as quantizer+aggregation (xnor+max,lsr+ema: "
                                                 "the seed paper's Table 6) instead of every quantizer x "
                                                 "aggregation")] = None,
    grid_only: Annotated[bool, Help("only the grid: no regulariser comparison, no NWSD")] = False,
    dask_address: DaskAddress = None,
    workers: Annotated[Workers, Help("parallel runs on a local Dask cluster; 0 = one after another in this "
                                     "process")] = 2,
    resume: Resume = False,
    overwrite: Overwrite = False,
    progress: Progress = False,
) -> dict:
    """Train every ablation student from the records at ``store`` (runs fanned out over Dask:
    ``dask_address``, else a LocalCluster of ``workers`` processes, 0 = in this process) and
    write ablation.md / ablation.parquet / ablation.png under ``out``. ``resume`` continues
    interrupted runs and keeps finished ones; ``overwrite`` replaces them."""
    config = AblationConfig(store=store, dataset=dataset, out=out, epochs=epochs, lr=lr, batch_size=batch_size,
                            seed=seed, device="cpu", kd_weight=kd_weight, temperature=temperature,
                            reg_weight=reg_weight, regularizer=regularizer, self_weight=self_weight,
                            backbone=backbone, quantizers=tuple(quantizers), aggregations=tuple(aggregations),
                            methods=tuple(methods) if methods else None, grid_only=grid_only,
                            existing=existing_mode(resume, overwrite))
    runs = ablation_runs(config)
    get_run_logger().info("ablation: %d student runs from %s", len(runs), store)
    with dask_task_runner(dask_address, workers) as runner:
        futures = [runner.submit(student_run_task, {"job": run.job}) for run in runs]
        with tqdm(total=len(futures), desc="runs", unit="run", disable=not progress) as bar:
            for future in as_completed(futures):
                future.result()
                bar.update(1)
        summaries = [future.result() for future in futures]
    paths = write_ablation(runs, summaries, config)
    markdown = open(paths["markdown"]).read()
    create_markdown_artifact(key="ablation", markdown=markdown, description=f"Ablation from {store}")
    return {"paths": paths, "markdown": markdown}

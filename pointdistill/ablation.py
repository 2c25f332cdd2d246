"""The seed paper's ablation from ONE record store: quantizer x aggregation x loss, the
regulariser comparison, and negative-weight self-distillation on/off; laid out like
../shared/REFERENCE.md section 3 (final-epoch test overall accuracy, %)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pointdistill.choices import METHOD_NAMES, check_declared
from pointdistill.distill import StudentJob, StudentTrainConfig
from pointdistill.losses import POOLING_NORMS, LossConfig
from pointdistill.run_directory import Existing

LOSS_COLUMNS = ("original", "+KD", "+reg", "+KD+reg")
# The paper's regulariser comparison pairs each quantizer with these aggregations.
REGULARIZER_ROWS = (("bnn", "max"), ("irnet", "max"), ("xnor", "max"), ("lsr", "ema"))


@dataclass(frozen=True)
class AblationConfig:
    """kd_weight (lambda), reg_weight (eta), temperature, self_weight (w) are used wherever a
    column turns that term on; every run shares the schedule and seed. backbone: every student is
    ``binary_<backbone>`` (the seed paper's Table 6 reads the grid of other backbones). The grid's
    rows are ``methods`` ("xnor+max", ...) where given, else every quantizer x aggregation;
    ``grid_only`` leaves out the regulariser comparison and NWSD (Table 6 is the grid's
    XNOR+MAX and LSR+EMA rows: ``methods=("xnor+max", "lsr+ema"), grid_only=True``)."""

    store: str
    dataset: str
    out: str
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"
    kd_weight: float = 0.5
    temperature: float = 2.0
    reg_weight: float = 0.01
    regularizer: str = "matrix-1"
    self_weight: float = 0.1
    backbone: str = "pointnet"
    quantizers: tuple[str, ...] = ("bnn", "irnet", "xnor", "lsr")
    aggregations: tuple[str, ...] = ("max", "ema")
    methods: tuple[str, ...] | None = None
    grid_only: bool = False
    existing: Existing = "refuse"

    def __post_init__(self):
        for method in self.methods or ():
            check_declared("ablation method (quantizer+aggregation)", method, METHOD_NAMES)

    def grid_rows(self) -> list[tuple[str, str]]:
        """The grid's (quantizer, aggregation) rows, in order."""
        if self.methods:
            return [tuple(method.split("+")) for method in self.methods]
        return [(q, a) for q in self.quantizers for a in self.aggregations]


@dataclass(frozen=True)
class AblationRun:
    table: str  # "grid", "regularizer" or "nwsd"
    row: str
    column: str
    job: StudentJob


def _loss(config: AblationConfig, kd: bool, reg: bool, regularizer: str | None = None,
          self_weight: float = 0.0) -> LossConfig:
    return LossConfig(kd_weight=config.kd_weight if kd else 0.0, temperature=config.temperature,
                      reg_weight=config.reg_weight if reg else 0.0,
                      regularizer=regularizer or config.regularizer, self_weight=self_weight)


def ablation_runs(config: AblationConfig) -> list[AblationRun]:
    """Every run of the ablation, each with its own output directory under ``config.out``."""
    train = StudentTrainConfig(epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
                               seed=config.seed, device=config.device)

    def job(name: str, quantizer: str, aggregation: str, loss: LossConfig) -> StudentJob:
        return StudentJob(store=config.store, dataset=config.dataset, out=str(Path(config.out) / "runs" / name),
                          backbone=config.backbone, quantizer=quantizer, aggregation=aggregation, loss=loss,
                          train=train,
                          existing=config.existing)

    runs, rows = [], config.grid_rows()
    for quantizer, aggregation in rows:
        row = f"{quantizer.upper()}+{aggregation.upper()}"
        for column, kd, reg in zip(LOSS_COLUMNS, (0, 1, 0, 1), (0, 0, 1, 1)):
            name = f"{quantizer}-{aggregation}-{column.strip('+').replace('+', '-') or 'original'}"
            runs.append(AblationRun("grid", row, column, job(name, quantizer, aggregation,
                                                              _loss(config, kd, reg))))
    if config.grid_only:
        return runs
    for quantizer, aggregation in REGULARIZER_ROWS:
        if (quantizer, aggregation) not in rows:
            continue
        for norm in POOLING_NORMS:
            if norm == config.regularizer:
                continue  # the grid's "+reg" run already is this one
            runs.append(AblationRun("regularizer", f"{quantizer.upper()}+{aggregation.upper()}", norm,
                                    job(f"{quantizer}-{aggregation}-reg-{norm}", quantizer, aggregation,
                                        _loss(config, False, True, norm))))
    if ("lsr", "ema") in rows:
        runs.append(AblationRun("nwsd", "LSR+EMA +KD+reg", f"NWSD w={config.self_weight}",
                                job("lsr-ema-kd-reg-nwsd", "lsr", "ema",
                                    _loss(config, True, True, self_weight=config.self_weight))))
    return runs


def result_rows(runs: list[AblationRun], summaries: list[dict]) -> list[dict]:
    """One flat row per run: where it sits in the tables, its settings and its accuracies."""
    rows = []
    for run, summary in zip(runs, summaries):
        rows.append({
            "table": run.table, "row": run.row, "column": run.column,
            "quantizer": run.job.quantizer, "aggregation": run.job.aggregation,
            **{f"loss_{k}": v for k, v in dataclasses.asdict(run.job.loss).items()},
            "epochs": run.job.train.epochs,
            "final_test_oa": summary["final_test_overall_accuracy"],
            "final_test_macc": summary["final_test_mean_class_accuracy"],
            "best_epoch_test_oa": summary["best_epoch_test_overall_accuracy (model selection on test, for comparison only)"],
            "teacher_test_oa": summary["teacher_test_overall_accuracy"],
            "out": run.job.out,
        })
    return rows


def _markdown(rows: list[dict], table: str, columns: list[str], config: AblationConfig) -> list[str]:
    cells = {(r["row"], r["column"]): r["final_test_oa"] for r in rows if r["table"] == table}
    if table == "regularizer":  # the grid's +reg runs of the same rows are the configured norm's column
        compared = {row for row, _ in cells}
        cells.update({(r["row"], config.regularizer): r["final_test_oa"] for r in rows
                      if r["table"] == "grid" and r["column"] == "+reg" and r["row"] in compared})
    names = list(dict.fromkeys(row for row, _ in cells))
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in names:
        values = [f"{100 * cells[(name, c)]:.1f}" if (name, c) in cells else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return lines


def write_ablation(runs: list[AblationRun], summaries: list[dict], config: AblationConfig) -> dict[str, str]:
    """ablation.md (the tables), ablation.parquet (one row per run) and ablation.png under ``out``."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = result_rows(runs, summaries)
    pq.write_table(pa.Table.from_pylist(rows), out / "ablation.parquet")
    teacher = rows[0]["teacher_test_oa"]
    lines = [f"Final-epoch test overall accuracy (%) of binary {config.backbone} students, {config.epochs} epochs, "
             f"seed {config.seed}; "
             f"teacher {100 * teacher:.1f}. lambda={config.kd_weight}, T={config.temperature}, "
             f"eta={config.reg_weight} ({config.regularizer})"
             + ("." if config.grid_only else f", NWSD w={config.self_weight}."), ""]
    lines += _markdown(rows, "grid", list(LOSS_COLUMNS), config)
    if any(r["table"] == "regularizer" for r in rows):
        lines += ["", "Regulariser alone (original loss + eta * L_reg):", ""]
        lines += _markdown(rows, "regularizer", list(POOLING_NORMS), config)
    nwsd = [r for r in rows if r["table"] == "nwsd"]
    if nwsd:
        base = next(r for r in rows if r["row"] == "LSR+EMA" and r["column"] == "+KD+reg")
        lines += ["", "Negative-weight self-distillation (LSR+EMA +KD+reg):", "",
                  "| NWSD | test OA |", "|---|---|", f"| off | {100 * base['final_test_oa']:.1f} |",
                  f"| on ({nwsd[0]['column']}) | {100 * nwsd[0]['final_test_oa']:.1f} |"]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "ablation.png", teacher)
    return {"markdown": str(out / "ablation.md"), "parquet": str(out / "ablation.parquet"),
            "plot": str(out / "ablation.png")}


def _plot(rows: list[dict], path: Path, teacher: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = [r for r in rows if r["table"] == "grid"]
    methods = list(dict.fromkeys(r["row"] for r in grid))
    fig, ax = plt.subplots(figsize=(12, 4))
    width = 0.2
    for k, column in enumerate(LOSS_COLUMNS):
        values = [100 * next((r["final_test_oa"] for r in grid if r["row"] == m and r["column"] == column), np.nan)
                  for m in methods]
        ax.bar(np.arange(len(methods)) + (k - 1.5) * width, values, width, label=column)
    ax.axhline(100 * teacher, color="black", linestyle="--", linewidth=1, label=f"teacher {100 * teacher:.1f}")
    ax.set_xticks(np.arange(len(methods)), methods)
    ax.set(ylabel="final test OA (%)", ylim=(0, 100))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=5, frameon=False)  # off the bars
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

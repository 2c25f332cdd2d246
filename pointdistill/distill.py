"""Training binary students from a record store (or, for checking, from a live teacher)."""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pointdistill.binary import initialize_binary_scales, set_training_progress
from pointdistill.binary.point_pool import check_training_kernel
from pointdistill.data import PointCloudSet, load_dataset
from pointdistill.losses import LossConfig, LossTargets, total_loss
from pointdistill.models import (
    BinaryPointNetConfig, Checkpoint, create_model, load_checkpoint, model_spec, resolve_device,
)
from pointdistill.records import ReplayLoader, open_store
from pointdistill.report import model_size_bytes, write_run
from pointdistill.train import evaluate


@dataclass(frozen=True)
class StudentTrainConfig:
    """Adam + cosine schedule over all steps; one recorded augmentation per shape per epoch.
    kernel: "fast" (the last point layer, BatchNorm and aggregation fused with XNOR-popcount
    kernels on the CPU) or "reference" (plain autograd); CUDA always runs the reference."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 256
    kernel: str = "fast"

    def __post_init__(self):
        check_training_kernel(self.kernel)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"StudentTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"StudentTrainConfig.lr must be > 0, got {self.lr}")


@dataclass
class StudentRun:
    """The trained student and what happened: per-epoch rows (loss terms, accuracies, lr, seconds)
    and the loss terms of the very first step (to compare replay with an online teacher)."""

    checkpoint: Checkpoint
    history: list[dict] = field(default_factory=list)
    first_step_terms: dict[str, float] = field(default_factory=dict)


class _SelfRecord:
    """The student's own softened predictions per record slot (shape, augmentation), kept in
    memory (float16 [N, A, C]) for negative-weight self-distillation; never written to the store."""

    def __init__(self, shapes: int, augmentations: int, classes: int, device):
        self.p = torch.zeros(shapes, augmentations, classes, dtype=torch.float16, device=device)
        self.seen = torch.zeros(shapes, augmentations, dtype=torch.bool, device=device)

    def lookup(self, shape_index, augmentation_index):
        return self.p[shape_index, augmentation_index], self.seen[shape_index, augmentation_index]

    def update(self, shape_index, augmentation_index, logits, temperature: float) -> None:
        self.p[shape_index, augmentation_index] = F.softmax(logits.detach().float() / temperature, 1).half()
        self.seen[shape_index, augmentation_index] = True


def train_student(spec: dict, loader: ReplayLoader, test_set: PointCloudSet, loss: LossConfig,
                  config: StudentTrainConfig, online_teacher: torch.nn.Module | None = None,
                  progress: bool = True) -> StudentRun:
    """Train the student described by ``spec`` on the records served by ``loader``.

    With ``online_teacher`` the teacher is run live on each rebuilt batch instead of using the
    recorded outputs (same inputs, same seeds): a baseline for checking and benchmarking.
    On CUDA: pinned host memory, non-blocking copies and bfloat16 autocast for the forward.
    """
    if len(loader) == 0:
        raise ValueError(f"{loader.uri}: {loader.shapes.size} shapes make no full batch of {loader.batch_size}")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = create_model(spec).to(device)
    model.training_kernel = config.kernel
    if online_teacher is not None:
        online_teacher = online_teacher.to(device).eval()
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()

    def to_device(batch):
        batch = batch.pin_memory() if cuda else batch
        return {k: v.to(device, non_blocking=True) for k, v in vars(batch).items()}

    first = to_device(next(iter(loader.epoch(0))))
    initialize_binary_scales(model, first["points"])  # LSR scales, before the optimizer exists
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * len(loader))
    layout = loader.layout
    self_record = (_SelfRecord(layout.num_shapes, layout.augmentations, layout.num_classes, device)
                   if loss.self_weight > 0 else None)
    run = StudentRun(checkpoint=None)
    for epoch in range(config.epochs):
        started = time.perf_counter()
        set_training_progress(model, epoch, config.epochs)
        model.train()
        sums: dict[str, float] = {}
        correct = seen_samples = 0
        bar = tqdm(loader.epoch(epoch), total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False)
        for batch in bar:
            b = to_device(batch)
            if online_teacher is not None and loss.needs_teacher:
                with torch.no_grad():
                    live = online_teacher(b["points"])
                b["teacher_logits"], b["teacher_pooled"] = live.logits.float(), live.pooled.float()
            previous_p = seen = None
            if self_record is not None:
                previous_p, seen = self_record.lookup(b["shape_index"], b["augmentation_index"])
            with autocast:
                out = model(b["points"])
            targets = LossTargets(b["labels"], b["teacher_logits"], b["teacher_pooled"], previous_p, seen)
            total, terms = total_loss(loss, out.logits, out.pooled, targets)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            schedule.step()
            if self_record is not None:
                self_record.update(b["shape_index"], b["augmentation_index"], out.logits, loss.temperature)
            step_terms = {**terms, "total": total.item()}
            run.first_step_terms = run.first_step_terms or step_terms
            count = len(b["labels"])
            for name, value in step_terms.items():
                sums[name] = sums.get(name, 0.0) + value * count
            correct += int((out.logits.argmax(1) == b["labels"]).sum())
            seen_samples += count
            bar.set_postfix(loss=f"{step_terms['total']:.3f}")
        test = evaluate(model, test_set, config.eval_batch_size, device)
        row = {"epoch": epoch + 1, **{f"loss_{k}": v / seen_samples for k, v in sums.items()},
               "train_accuracy": correct / seen_samples,
               **{f"test_{k}": v for k, v in test.items()},
               "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
        run.history.append(row)
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}  loss {row['loss_total']:.4f}  train acc "
                       f"{row['train_accuracy']:.3f}  test OA {row['test_overall_accuracy']:.4f}  "
                       f"mAcc {row['test_mean_class_accuracy']:.4f}  ({row['seconds']:.1f}s)")
    final = run.history[-1]
    best = max(run.history, key=lambda r: r["test_overall_accuracy"])
    run.checkpoint = Checkpoint(
        spec=model.spec,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        class_names=list(test_set.class_names),
        dataset={"name": loader.dataset.name, "fingerprint": loader.dataset.fingerprint(),
                 "num_points": loader.dataset.num_points},
        metrics={"test_overall_accuracy": final["test_overall_accuracy"],
                 "test_mean_class_accuracy": final["test_mean_class_accuracy"],
                 "best_epoch": best["epoch"], "best_epoch_test_overall_accuracy": best["test_overall_accuracy"],
                 "records": {"store": loader.uri, "teacher_sha256": loader.attrs["teacher"]["weights_sha256"]},
                 "loss": dataclasses.asdict(loss),
                 "online_teacher": online_teacher is not None},
    )
    return run


@dataclass(frozen=True)
class StudentJob:
    """One student run: where the records and data are, the student, the loss and the schedule.
    point_widths / head_widths default to the recorded teacher's."""

    store: str
    dataset: str
    out: str
    quantizer: str = "lsr"
    aggregation: str = "ema"
    point_widths: tuple[int, ...] | None = None
    head_widths: tuple[int, ...] | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    train: StudentTrainConfig = field(default_factory=StudentTrainConfig)
    online_teacher: str | None = None
    use_completed_part: bool = False
    storage_options: dict | None = None


def student_spec(teacher_spec: dict, quantizer: str, aggregation: str,
                 point_widths: tuple[int, ...] | None = None, head_widths: tuple[int, ...] | None = None) -> dict:
    """A binary PointNet spec, the teacher's widths unless given."""
    config = BinaryPointNetConfig(
        num_classes=teacher_spec["num_classes"],
        point_widths=tuple(point_widths or teacher_spec["point_widths"]),
        head_widths=tuple(head_widths or teacher_spec["head_widths"]),
        quantizer=quantizer, aggregation=aggregation)
    return model_spec("binary_pointnet", config)


def run_student_job(job: StudentJob, progress: bool = True) -> dict:
    """Train one student by replay and write its outputs under ``job.out``; returns the summary
    (final-epoch test accuracy, best epoch beside it, teacher accuracy, model sizes, paths)."""
    train_set = load_dataset(job.dataset, "train", _recorded_points(job))
    test_set = load_dataset(job.dataset, "test", train_set.num_points)
    loader = ReplayLoader(job.store, train_set, job.train.batch_size, seed=job.train.seed,
                          use_completed_part=job.use_completed_part, storage_options=job.storage_options)
    teacher_spec = loader.attrs["teacher"]["model"]
    spec = student_spec(teacher_spec, job.quantizer, job.aggregation, job.point_widths, job.head_widths)
    if job.loss.reg_weight > 0 and spec["point_widths"][-1] != loader.layout.pooled_dim:
        raise ValueError(f"the pooling regulariser needs the student's pooled width "
                         f"{spec['point_widths'][-1]} to equal the teacher's {loader.layout.pooled_dim}")
    online = load_checkpoint(job.online_teacher).build_model() if job.online_teacher else None
    run = train_student(spec, loader, test_set, job.loss, job.train, online_teacher=online, progress=progress)
    student = create_model(spec)
    student.load_state_dict(run.checkpoint.state_dict)
    teacher_sizes = model_size_bytes(create_model(teacher_spec))
    metrics = run.checkpoint.metrics
    summary = {
        "student": {k: spec[k] for k in ("quantizer", "aggregation", "point_widths", "head_widths")},
        "loss": dataclasses.asdict(job.loss), "epochs": job.train.epochs, "seed": job.train.seed,
        "final_test_overall_accuracy": metrics["test_overall_accuracy"],
        "final_test_mean_class_accuracy": metrics["test_mean_class_accuracy"],
        "best_epoch": metrics["best_epoch"],
        "best_epoch_test_overall_accuracy (model selection on test, for comparison only)":
            metrics["best_epoch_test_overall_accuracy"],
        "teacher_test_overall_accuracy": loader.attrs["teacher"]["metrics"].get("test_overall_accuracy"),
        "student_bytes": model_size_bytes(student), "teacher_float_bytes": teacher_sizes["float_bytes"],
        "records": metrics["records"], "online_teacher": job.online_teacher,
        "first_step_terms": run.first_step_terms,
    }
    summary["outputs"] = write_run(job.out, run.checkpoint, run.history, summary, name="student")
    return summary


def _recorded_points(job: StudentJob) -> int:
    return int(open_store(job.store, job.storage_options).attrs["dataset"]["num_points"])

"""Training binary students from a record store (or, for checking, from a live teacher)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pointdistill.binary import binary_weight_signs, flipped_share, initialize_binary_scales, set_training_progress
from pointdistill.choices import STUDENT_BACKBONE_NAMES, check_declared
from pointdistill.config_checks import check_fraction
from pointdistill.cpu_training import prepare_cpu_training
from pointdistill.data import PointCloudSet, load_dataset
from pointdistill.data.split import validation_indices, validation_subset
from pointdistill.engine.export import ExportError, export_student
from pointdistill.engine.predict import predict
from pointdistill.engine.runtime import Engine
from pointdistill.epoch_totals import EpochTotals
from pointdistill.losses import LossConfig, LossTargets, total_loss
from pointdistill.models import MODELS, Checkpoint, create_model, load_checkpoint, model_spec, resolve_device
from pointdistill.models.registry import config_from_fields
from pointdistill.optimizer import adam
from pointdistill.progress import EpochClock
from pointdistill.records import ReplayLoader, open_store
from pointdistill.report import float_bytes, run_files, student_sizes, write_run
from pointdistill.run_directory import Existing, RunDirectory, RunDirectoryError
from pointdistill.train import (
    accuracy_metrics, accuracy_text, check_schedule, evaluate, restore_rng_states,
    resume_defaults, resume_settings, rng_states, tested_after, untested,
)
from pointdistill.weight_average import WeightAverage

ENGINE_EVAL_CLOUDS = 32  # clouds per engine call when evaluating


@dataclass(frozen=True)
class StudentTrainConfig:
    """Adam + cosine schedule over all steps; one recorded augmentation per shape per epoch.
    kernel: "fast" (on the CPU, the binary point layers with BatchNorm and Hardtanh, and the widest
    layer with BatchNorm and the aggregation, fused over XNOR-popcount kernels) or "reference"
    (plain autograd); CUDA always runs the reference. eval_every: test (and validation) accuracy
    after every eval_every-th epoch and the last (pointdistill.train.tested_after), NaN between;
    it does not change the training, so a run may resume with another value. average_from: 0 =
    off; else the student is the uniform average of the weights (and BatchNorm statistics) at
    the end of epochs average_from..epochs (pointdistill.weight_average), tested as such after
    every tested epoch from average_from on, beside the live weights."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 256
    kernel: str = "fast"
    eval_every: int = 1
    average_from: int = 0

    def __post_init__(self):
        check_schedule(self)
        if not 0 <= self.average_from <= self.epochs:
            raise ValueError(f"StudentTrainConfig.average_from must be 0 (off) or an epoch in 1..{self.epochs} "
                             f"(epochs), got {self.average_from}")


@dataclass
class StudentRun:
    """The trained student and what happened: per-epoch rows (loss terms, accuracies, lr, seconds)
    and the loss terms of the very first step (to compare replay with an online teacher)."""

    checkpoint: Checkpoint
    history: list[dict] = field(default_factory=list)
    first_step_terms: dict[str, float] = field(default_factory=dict)


def pooled_adapter(student_width: int, teacher_width: int) -> torch.nn.Linear | None:
    """The learned linear map, student pooled [B, student_width] -> [B, teacher_width], through
    which the pooling regulariser compares a student with a teacher of another pooled width (a
    store recorded by another architecture, e.g. DGCNN's 2,048-wide max + mean; ours). It trains
    with the student and is saved in the resume state, but is no part of the student: the
    checkpoint and the exported model never hold it. None where the widths are equal."""
    if student_width == teacher_width:
        return None
    return torch.nn.Linear(student_width, teacher_width)


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
                  progress: bool = True, run_dir: RunDirectory | None = None,
                  validation_set: PointCloudSet | None = None) -> StudentRun:
    """Train the student described by ``spec`` on the records served by ``loader``; after every
    epoch, evaluate it on ``test_set`` and on ``validation_set`` (held-out training shapes the
    loader does not serve, for choosing settings without the test set) when there is one.

    With ``online_teacher`` the teacher is run live on each rebuilt batch instead of using the
    recorded outputs (same inputs, same seeds): a baseline for checking and benchmarking.
    On CUDA: pinned host memory, non-blocking copies and bfloat16 autocast for the forward.
    With ``run_dir``, the resume state is saved after every epoch and training continues from
    ``run_dir.state`` when there is one: bit-identical to an uninterrupted run on the CPU.
    """
    if len(loader) == 0:
        raise ValueError(f"{loader.uri}: {loader.shapes.size} shapes make no full batch of {loader.batch_size}")
    device = resolve_device(config.device)
    if device.type == "cpu":
        prepare_cpu_training()  # warm pages for each step's activations, denormals flushed
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
    adapter = None
    if loss.reg_weight > 0:
        with torch.no_grad():
            student_width = model.eval()(first["points"][:2]).pooled.shape[1]
        adapter = pooled_adapter(student_width, loader.layout.pooled_dim)
    trained = [*model.parameters(), *(adapter.to(device).parameters() if adapter is not None else [])]
    optimizer = adam(trained, config.lr, config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * len(loader))
    layout = loader.layout
    self_record = (_SelfRecord(layout.num_shapes, layout.augmentations, layout.num_classes, device)
                   if loss.self_weight > 0 else None)
    run = StudentRun(checkpoint=None)
    state = run_dir.state if run_dir is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        if adapter is not None:
            adapter.load_state_dict(state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        restore_rng_states(state["rng"], device)
        run.history, run.first_step_terms = list(state["history"]), dict(state["first_step_terms"])
        if self_record is not None:
            self_record.p.copy_(state["self_record_p"])
            self_record.seen.copy_(state["self_record_seen"])
    average = resumed_average(state.get("weight_average") if state else None, config.average_from, len(run.history))
    for row in run.history:  # epochs saved by a version that did not count sign flips
        row.setdefault("weight_flips", math.nan)
    signs = binary_weight_signs(model)
    steps = len(loader)
    evaluation_sets = {"test": test_set, **({"validation": validation_set} if validation_set is not None else {})}
    not_tested = {name: untested() for name in evaluation_sets}
    if average is not None:  # epochs finished before a resume switched averaging on have no averaged scores
        for row in run.history:
            for key, value in averaged_keys(not_tested).items():
                row.setdefault(key, value)
    state_path = run_dir.state_path if run_dir is not None else None
    clock = EpochClock(config.epochs, len(run.history))
    for epoch in range(len(run.history), config.epochs):
        started = time.perf_counter()
        set_training_progress(model, epoch, config.epochs)
        model.train()
        totals = EpochTotals(device, loss.term_names, check_every_step=not cuda)
        bar = tqdm(loader.epoch(epoch), total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False)
        for step, batch in enumerate(bar):
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
                pooled = out.pooled if adapter is None else adapter(out.pooled)
            targets = LossTargets(b["labels"], b["teacher_logits"], b["teacher_pooled"], previous_p, seen)
            total, terms = total_loss(loss, out.logits, pooled, targets)
            totals.add(step + 1, total, terms, out.logits, b["labels"])
            totals.after_step(epoch + 1, config.epochs, steps, state_path)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            schedule.step()
            if self_record is not None:
                self_record.update(b["shape_index"], b["augmentation_index"], out.logits, loss.temperature)
            if not run.first_step_terms:  # the run's first step only: one host read
                run.first_step_terms = {**{k: float(v) for k, v in terms.items()}, "total": float(total.detach())}
            if progress and step % 50 == 0:
                bar.set_postfix(loss=f"{totals.means()['total']:.3f}")
        totals.raise_if_diverged(epoch + 1, config.epochs, steps, state_path)
        means = totals.means()
        now = binary_weight_signs(model)
        flips, signs = flipped_share(signs, now), now
        if average is not None and epoch + 1 >= config.average_from:
            average.add(model)
        tested = tested_after(epoch + 1, config.epochs, config.eval_every)
        if tested:
            scores = evaluate_as_deployed(model, evaluation_sets, config.eval_batch_size, device)
        else:
            scores = not_tested
        test, validation = scores["test"], scores.get("validation", {})
        row = {"epoch": epoch + 1, **{f"loss_{k}": means[k] for k in totals.names},
               "train_accuracy": means["accuracy"], "weight_flips": flips,
               **{f"test_{k}": v for k, v in test.items()},
               **{f"validation_{k}": v for k, v in validation.items()}}
        averaged_tested = average is not None and tested and average.count > 0
        if average is not None:
            averaged_scores = (evaluate_as_deployed(averaged_model(model, average), evaluation_sets,
                                                    config.eval_batch_size, device)
                               if averaged_tested else not_tested)
            row.update(averaged_keys(averaged_scores))
        row.update(lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - started)
        run.history.append(row)
        if run_dir is not None:
            saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "schedule": schedule.state_dict(), "rng": rng_states(device), "history": run.history,
                     "first_step_terms": run.first_step_terms}
            if self_record is not None:
                saved.update(self_record_p=self_record.p.cpu(), self_record_seen=self_record.seen.cpu())
            if adapter is not None:
                saved["adapter"] = adapter.state_dict()
            if average is not None:
                saved["weight_average"] = {"from": config.average_from, **average.state_dict()}
            run_dir.save_state(saved)
        shown = accuracy_text(test)
        if averaged_tested:
            shown += f"  averaged weights: test OA {row['averaged_test_overall_accuracy']:.4f}"
        if validation_set is not None and tested:
            shown = f"validation OA {row['validation_overall_accuracy']:.4f}  {shown}"
        clock.log(epoch, f"loss {row['loss_total']:.4f}  train acc {row['train_accuracy']:.3f}  "
                         f"flips {100 * flips:.2f}%  {shown}")
    last = run.history[-1]
    best = max((r for r in run.history if not math.isnan(r["test_overall_accuracy"])),
               key=lambda r: r["test_overall_accuracy"])
    final = last if average is None else {key.removeprefix("averaged_"): value for key, value in last.items()
                                          if key.startswith("averaged_")}
    weights = model.state_dict() if average is None else average.averaged_state(model)
    run.checkpoint = Checkpoint(
        spec=model.spec,
        state_dict={k: v.detach().cpu() for k, v in weights.items()},
        class_names=list(test_set.class_names),
        dataset={"name": loader.dataset.name, "fingerprint": loader.dataset.fingerprint(),
                 "num_points": loader.dataset.num_points},
        metrics={"epochs": last["epoch"], "test_overall_accuracy": final["test_overall_accuracy"],
                 "test_mean_class_accuracy": final["test_mean_class_accuracy"],
                 "best_epoch": best["epoch"], "best_epoch_test_overall_accuracy": best["test_overall_accuracy"],
                 "weights_averaged_over_epochs": ([config.average_from, last["epoch"]] if average is not None
                                                  else None),
                 "last_epoch_weights_test_overall_accuracy": last["test_overall_accuracy"],
                 **{key: final[key] for key in ("validation_overall_accuracy", "validation_mean_class_accuracy")
                    if key in final},
                 "validation_shapes": len(validation_set) if validation_set is not None else 0,
                 "records": {"store": loader.uri, "teacher_sha256": loader.attrs["teacher"]["weights_sha256"]},
                 "loss": dataclasses.asdict(loss),
                 "pooled_adapter": (None if adapter is None else
                                    {"student_width": adapter.in_features, "teacher_width": adapter.out_features}),
                 "online_teacher": online_teacher is not None},
    )
    return run


def resumed_average(saved: dict | None, average_from: int, done: int) -> WeightAverage | None:
    """The weight average a run trains with (None where ``average_from`` is 0, off): a new one,
    or the one an interrupted run continues: ``saved`` is its state's (None where it averaged
    nothing, or for a new run), ``average_from`` the epoch asked for now, ``done`` its finished
    epochs. Averaging does not change the training, so a run may resume with averaging switched on
    or moved, as long as no epoch that is done had to be in the average: refused, naming
    average_from, where the interrupted run has averaged epochs (unless it is the same
    average_from) or where the epoch asked for is already done."""
    averaged = saved["count"] if saved else 0
    if averaged and average_from != saved["from"]:
        raise RunDirectoryError(f"average_from: the interrupted run has averaged the weights of epochs "
                                f"{saved['from']}..{done}; resume it with average_from {saved['from']}")
    if not averaged and 0 < average_from <= done:
        raise RunDirectoryError(f"average_from: the interrupted run finished epochs 1..{done} without averaging "
                                f"them; average from a later epoch (> {done}), or start over")
    if not average_from:
        return None
    average = WeightAverage()
    if averaged:
        average.load_state_dict(saved)
    return average


def averaged_keys(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """The averaged weights' accuracies by set name as history keys: averaged_<set>_<metric>."""
    return {f"averaged_{name}_{k}": v for name, metrics in scores.items() for k, v in metrics.items()}


def averaged_model(model: torch.nn.Module, average: WeightAverage) -> torch.nn.Module:
    """A copy of ``model`` (same spec, device) holding the weights of ``average``, in eval mode."""
    copy = create_model(model.spec).to(next(model.parameters()).device)
    copy.load_state_dict(average.averaged_state(model))
    return copy.eval()


def evaluate_as_deployed(model: torch.nn.Module, datasets: dict[str, PointCloudSet], batch_size: int,
                         device: torch.device) -> dict[str, dict[str, float]]:
    """Accuracy of the student as it is deployed, on each of ``datasets`` (by name; they share
    class names and points per cloud): a student that exports (sign activations) is folded once
    and run by the bit-packed engine on the CPU — the number `pointdistill predict` prints for
    its .pdbn, and about 20x faster than the float forward; one that does not (XNOR-Net scales
    activations per sample) takes ``evaluate``, the float forward."""
    first = next(iter(datasets.values()))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    student = Checkpoint(spec=model.spec, state_dict=state, class_names=list(first.class_names),
                         dataset={"num_points": first.num_points}, metrics={})
    try:
        engine = Engine(export_student(student))
    except ExportError:
        return {name: evaluate(model, data, batch_size, device) for name, data in datasets.items()}
    return {name: accuracy_metrics(torch.from_numpy(predict(engine, data.points, ENGINE_EVAL_CLOUDS)),
                                   torch.from_numpy(data.labels), data.num_classes)
            for name, data in datasets.items()}


@dataclass(frozen=True)
class StudentJob:
    """One student run: where the records and data are, the student, the loss and the schedule.
    backbone: the student is ``binary_<backbone>`` (pointdistill.choices.STUDENT_BACKBONE_NAMES);
    its architecture and widths default to the recorded teacher's where that is the same backbone
    (``student_spec``). dropout: the student's, before its float classifier (0 = none; the
    teacher's own is not copied). shortcuts, head_shortcuts: the PointNet student's real-valued
    shortcuts around its hidden point layers and around its head layers; learned_thresholds: a
    learned threshold per input channel of each binary layer whose input a shortcut carries
    (pointdistill.models.binary_pointnet.BinaryPointNetConfig). existing: what to do when
    ``out`` (or an interrupted run of it) is already there: refuse, resume or overwrite.
    validation_fraction: the share of each training class held out of replay and evaluated on
    after every epoch (pointdistill.data.split; the same shapes for every run); 0 = none."""

    store: str
    dataset: str
    out: str
    backbone: str = "pointnet"
    quantizer: str = "lsr"
    aggregation: str = "ema"
    point_widths: tuple[int, ...] | None = None
    head_widths: tuple[int, ...] | None = None
    dropout: float = 0.0
    shortcuts: bool = False
    head_shortcuts: bool = False
    learned_thresholds: bool = False
    loss: LossConfig = field(default_factory=LossConfig)
    train: StudentTrainConfig = field(default_factory=StudentTrainConfig)
    online_teacher: str | None = None
    use_completed_part: bool = False
    validation_fraction: float = 0.0
    storage_options: dict | None = None
    existing: Existing = "refuse"

    def __post_init__(self):
        check_declared("student backbone", self.backbone, STUDENT_BACKBONE_NAMES)
        check_fraction("StudentJob", validation_fraction=self.validation_fraction, dropout=self.dropout)


def student_spec(teacher_spec: dict, quantizer: str, aggregation: str,
                 point_widths: tuple[int, ...] | None = None, head_widths: tuple[int, ...] | None = None,
                 backbone: str = "pointnet", dropout: float = 0.0, shortcuts: bool = False,
                 head_shortcuts: bool = False, learned_thresholds: bool = False) -> dict:
    """The spec of the binary student ``binary_<backbone>``: the teacher's architecture where the
    teacher is a ``backbone`` too (every field the student shares, not its dropout or T-Nets),
    else the student's defaults (BiPointNet's widths for PointNet); ``head_widths`` and, for the
    PointNet student, ``point_widths`` override. ``dropout``: the student's own, before its float
    classifier (pointdistill.models.binary_pointnet.binary_head). ``shortcuts``, ``head_shortcuts``:
    the PointNet student's real-valued shortcuts around its hidden point layers, its head layers;
    ``learned_thresholds``: its learned thresholds on the inputs those shortcuts carry."""
    check_declared("student backbone", backbone, STUDENT_BACKBONE_NAMES)
    name = f"binary_{backbone}"
    shared = {f.name for f in dataclasses.fields(MODELS[name].config_cls)} - {"name", "num_classes", "dropout"}
    fields = {k: v for k, v in teacher_spec.items() if k in shared} if teacher_spec["name"] == backbone else {}
    if point_widths:
        if "point_widths" not in shared:
            raise ValueError(f"point_widths set the pointnet student's layers; the {backbone} student takes its "
                             f"teacher's architecture (or its defaults) and head_widths")
        fields["point_widths"] = point_widths
    if head_widths:
        fields["head_widths"] = head_widths
    for switch, on in (("shortcuts", shortcuts), ("head_shortcuts", head_shortcuts),
                       ("learned_thresholds", learned_thresholds)):
        if on:
            if switch not in shared:
                raise ValueError(f"{switch} are the pointnet student's; the {backbone} student has none")
            fields[switch] = True
    config = config_from_fields(MODELS[name].config_cls, {**fields, "num_classes": teacher_spec["num_classes"],
                                                          "quantizer": quantizer, "aggregation": aggregation,
                                                          "dropout": dropout})
    return model_spec(name, config)


def run_student_job(job: StudentJob, progress: bool = True) -> dict:
    """Train one student by replay (resuming an interrupted run when asked) and commit its
    outputs under ``job.out`` together; returns the summary (final-epoch test accuracy, best
    epoch beside it, teacher accuracy, model sizes, paths)."""
    train_set = load_dataset(job.dataset, "train", _recorded_points(job))
    test_set = load_dataset(job.dataset, "test", train_set.num_points)
    held_out = validation_indices(train_set.labels, job.validation_fraction)
    validation_set = validation_subset(train_set, held_out) if job.validation_fraction > 0 else None
    loader = ReplayLoader(job.store, train_set, job.train.batch_size, seed=job.train.seed,
                          use_completed_part=job.use_completed_part, storage_options=job.storage_options,
                          held_out=held_out)
    teacher_spec = loader.attrs["teacher"]["model"]
    spec = student_spec(teacher_spec, job.quantizer, job.aggregation, job.point_widths, job.head_widths,
                        job.backbone, job.dropout, job.shortcuts, job.head_shortcuts, job.learned_thresholds)
    settings = resume_settings(job, train_set.fingerprint())
    settings.pop("storage_options")  # credentials are not settings, and never written
    settings["teacher_sha256"] = loader.attrs["teacher"]["weights_sha256"]
    with RunDirectory(job.out, job.existing, settings, resume_defaults(StudentJob)) as run_dir:
        if run_dir.finished:
            summary = json.loads((run_dir.out / "summary.json").read_text())
            run_dir.check_finished(summary.get("settings", {}))
            averaged = summary.get("weights_averaged_over_epochs")
            if (averaged[0] if averaged else 0) != job.train.average_from:
                raise RunDirectoryError(f"{job.out} holds a finished run with weights averaged from epoch "
                                        f"{averaged[0] if averaged else 0} (0 = none), not "
                                        f"{job.train.average_from}; choose another output, or replace it "
                                        f"with --overwrite")
            return summary
        online = load_checkpoint(job.online_teacher).build_model() if job.online_teacher else None
        run = train_student(spec, loader, test_set, job.loss, job.train, online_teacher=online,
                            progress=progress, run_dir=run_dir, validation_set=validation_set)
        summary = {**_summary(job, spec, teacher_spec, loader, run), "settings": settings,
                   "outputs": {kind: str(run_dir.out / file) for kind, file in run_files("student").items()}}
        write_run(run_dir.result, run.checkpoint, run.history, summary, name="student")
        run_dir.commit()
    return summary


def _summary(job: StudentJob, spec: dict, teacher_spec: dict, loader: ReplayLoader, run: StudentRun) -> dict:
    metrics = run.checkpoint.metrics
    return {
        "student": {k: v for k, v in spec.items() if k != "num_classes"},
        "loss": dataclasses.asdict(job.loss), "epochs": job.train.epochs, "seed": job.train.seed,
        "final_test_overall_accuracy": metrics["test_overall_accuracy"],
        "final_test_mean_class_accuracy": metrics["test_mean_class_accuracy"],
        "final_validation_overall_accuracy": metrics.get("validation_overall_accuracy"),
        "final_validation_mean_class_accuracy": metrics.get("validation_mean_class_accuracy"),
        "validation_shapes": metrics["validation_shapes"],
        "weights_averaged_over_epochs": metrics["weights_averaged_over_epochs"],
        "last_epoch_weights_test_overall_accuracy": metrics["last_epoch_weights_test_overall_accuracy"],
        "best_epoch": metrics["best_epoch"],
        "best_epoch_test_overall_accuracy (model selection on test, for comparison only)":
            metrics["best_epoch_test_overall_accuracy"],
        "teacher_test_overall_accuracy": loader.attrs["teacher"]["metrics"].get("test_overall_accuracy"),
        "student_bytes": student_sizes(run.checkpoint),
        "teacher_float_bytes": float_bytes(create_model(teacher_spec)),
        "records": metrics["records"], "online_teacher": job.online_teacher,
        "pooled_adapter": metrics["pooled_adapter"],
        "first_step_terms": run.first_step_terms,
    }


def _recorded_points(job: StudentJob) -> int:
    return int(open_store(job.store, job.storage_options).attrs["dataset"]["num_points"])

"""Supervised training and evaluation of full-precision classifiers (the teacher)."""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pointdistill.augment import AugmentPolicy, apply, augmentation_params
from pointdistill.binary.popcount import check_training_kernel
from pointdistill.config_checks import check_at_least, check_non_negative, check_positive
from pointdistill.cpu_training import prepare_cpu_training
from pointdistill.data import PointCloudSet, load_dataset
from pointdistill.epoch_totals import EpochTotals
from pointdistill.models import (
    Checkpoint, batched_forward, create_model, load_checkpoint, resolve_device, save_checkpoint,
)
from pointdistill.models.teacher_options import TeacherOptions, teacher_spec
from pointdistill.optimizer import adam
from pointdistill.progress import EpochClock
from pointdistill.report import teacher_files, write_teacher_history
from pointdistill.run_directory import Existing, RunDirectory


_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Adam + cosine schedule; each epoch draws one fresh augmentation per shape. kernel: "fast"
    (the widest point layer, BatchNorm and max fused on the CPU) or "reference" (plain autograd);
    both compute the same gradients within float32 rounding, CUDA always runs the reference.
    eval_every: test accuracy after every eval_every-th epoch and the last (``tested_after``)."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 256
    policy: AugmentPolicy = field(default_factory=AugmentPolicy)
    kernel: str = "fast"
    eval_every: int = 1

    def __post_init__(self):
        check_schedule(self)


def check_schedule(config) -> None:
    """Refuse a training config (TrainConfig, StudentTrainConfig) a run cannot follow, naming
    ``Class.field``: an unknown kernel, counts below 1, a non-positive lr, a negative or NaN weight decay."""
    owner = type(config).__name__
    check_training_kernel(config.kernel)
    check_at_least(owner, 1, epochs=config.epochs, batch_size=config.batch_size,
                   eval_batch_size=config.eval_batch_size, eval_every=config.eval_every)
    check_positive(owner, lr=config.lr)
    check_non_negative(owner, weight_decay=config.weight_decay)


def rng_states(device: torch.device) -> dict:
    """The global RNG states a training step draws from (dropout), for resuming exactly, and the
    torch thread count (CPU float reductions, so the exact bits, depend on it)."""
    states = {"torch": torch.get_rng_state(), "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict, device: torch.device) -> None:
    """Restore ``rng_states``; warn when the run continues with another thread count or device
    (it continues correctly, but not bit-identical to an uninterrupted run)."""
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)
    now = {"threads": torch.get_num_threads(), "device": str(device)}
    changed = [f"{k} {states.get(k)} -> {v}" for k, v in now.items() if states.get(k) != v]
    if changed:
        warnings.warn(f"resuming with {', '.join(changed)}: the run continues, but its bits will differ "
                      f"from an uninterrupted run's", stacklevel=2)


ACCURACY_KEYS = ("overall_accuracy", "mean_class_accuracy")  # accuracy_metrics' keys


def tested_after(epoch: int, epochs: int, eval_every: int) -> bool:
    """Whether a run is tested after ``epoch`` (1-based): every eval_every-th and the last. The
    epochs between get NaN accuracies (``untested``); testing never changes the training."""
    return epoch % eval_every == 0 or epoch == epochs


def untested() -> dict[str, float]:
    """accuracy_metrics' keys, NaN: the accuracies of an epoch that was not tested."""
    return dict.fromkeys(ACCURACY_KEYS, math.nan)


def accuracy_text(test: dict[str, float]) -> str:
    """A history row's test accuracies for the epoch's log line, or "not tested"."""
    if math.isnan(test["overall_accuracy"]):
        return "not tested"
    return f"test OA {test['overall_accuracy']:.4f}  mAcc {test['mean_class_accuracy']:.4f}"


def accuracy_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """overall accuracy and mean per-class accuracy (classes absent from ``labels`` skipped), in [0, 1],
    as float64 fractions (correct / total exactly rounded, as numpy's mean gives them)."""
    correct = (logits.argmax(dim=1) == labels).double()
    per_class = [correct[labels == c].mean().item() for c in range(num_classes) if (labels == c).any()]
    return dict(zip(ACCURACY_KEYS, (correct.mean().item(), float(np.mean(per_class)))))


def evaluate(model: torch.nn.Module, dataset: PointCloudSet, batch_size: int = 256,
             device: str | torch.device = "cpu") -> dict[str, float]:
    """Accuracy of ``model`` on the un-augmented shapes of ``dataset``, ``batch_size`` clouds at a
    time (on the CPU fewer: ``batched_forward``)."""
    out = batched_forward(model, torch.from_numpy(dataset.points), batch_size, device)
    return accuracy_metrics(out.logits, torch.from_numpy(dataset.labels), dataset.num_classes)


def train_classifier(spec: dict, train_set: PointCloudSet, test_set: PointCloudSet,
                     config: TrainConfig, progress: bool = True, run: RunDirectory | None = None) -> Checkpoint:
    """Train the model described by ``spec`` on ``train_set``; return its checkpoint with
    per-epoch history and final test accuracy in ``metrics``. With ``run``, the resume state
    is saved after every epoch and training continues from ``run.state`` when there is one:
    the result is bit-identical to an uninterrupted run on the CPU."""
    if list(test_set.class_names) != list(train_set.class_names):
        raise ValueError(f"test split {test_set.source} has other class names than {train_set.source}")
    device = resolve_device(config.device)
    if device.type == "cpu":
        prepare_cpu_training()  # warm pages for each step's activations, denormals flushed
    torch.manual_seed(config.seed)
    model = create_model(spec).to(device)
    if hasattr(model, "training_kernel"):
        model.training_kernel = config.kernel
    elif config.kernel == "fast" and device.type == "cpu":
        _log.info("%s has no fused CPU layers: it trains on the reference (autograd) path", spec["name"])
    optimizer = adam(model.parameters(), config.lr, config.weight_decay)
    steps_per_epoch = -(-len(train_set) // config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    points = torch.from_numpy(train_set.points)
    labels = torch.from_numpy(train_set.labels)
    order_rng = torch.Generator().manual_seed(config.seed)
    history = []
    if run is not None and run.state is not None:
        model.load_state_dict(run.state["model"])
        optimizer.load_state_dict(run.state["optimizer"])
        schedule.load_state_dict(run.state["schedule"])
        order_rng.set_state(run.state["order_rng"])
        restore_rng_states(run.state["rng"], device)
        history = list(run.state["history"])
    state_path = run.state_path if run is not None else None
    clock = EpochClock(config.epochs, len(history))
    for epoch in range(len(history), config.epochs):
        model.train()
        order = torch.randperm(len(train_set), generator=order_rng)
        # One augmentation per shape per epoch, drawn by the same counter-based generator as records.
        params = torch.from_numpy(augmentation_params(
            config.policy, config.seed, np.arange(len(train_set)), np.full(len(train_set), epoch)))
        totals = EpochTotals(device, check_every_step=device.type != "cuda")
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False)
        for step in bar:
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            if len(index) < 2:  # BatchNorm needs two samples
                continue
            batch = apply(points[index], params[index]).to(device)
            target = labels[index].to(device)
            logits = model(batch).logits
            loss = F.cross_entropy(logits, target)
            totals.add(step + 1, loss, {}, logits, target)
            totals.after_step(epoch + 1, config.epochs, steps_per_epoch, state_path)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if progress and step % 50 == 0:
                bar.set_postfix(loss=f"{totals.means()['total']:.3f}")
        totals.raise_if_diverged(epoch + 1, config.epochs, steps_per_epoch, state_path)
        means = totals.means()
        test = (evaluate(model, test_set, config.eval_batch_size, device)
                if tested_after(epoch + 1, config.epochs, config.eval_every) else untested())
        history.append({"epoch": epoch + 1, "train_loss": means["total"], "train_accuracy": means["accuracy"],
                        **{f"test_{k}": v for k, v in test.items()}})
        if run is not None:
            run.save_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "schedule": schedule.state_dict(), "order_rng": order_rng.get_state(),
                            "rng": rng_states(device), "history": history})
        clock.log(epoch, f"loss {history[-1]['train_loss']:.4f}  train acc {history[-1]['train_accuracy']:.3f}  "
                         f"{accuracy_text(test)}")
    return Checkpoint(
        spec=model.spec,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        class_names=list(train_set.class_names),
        dataset={"name": train_set.name, "fingerprint": train_set.fingerprint(), "num_points": train_set.num_points},
        metrics={"history": history, **{k: v for k, v in history[-1].items() if k.startswith("test_")}},
    )


@dataclass(frozen=True)
class TeacherJob:
    """One teacher run: the dataset directory, the checkpoint to write, the teacher (a registered
    model and its options) and the schedule. existing: what to do when ``out`` (or an interrupted
    run of it) is already there."""

    dataset: str
    out: str
    num_points: int = 1024
    model: str = "pointnet"
    options: TeacherOptions = field(default_factory=TeacherOptions)
    train: TrainConfig = field(default_factory=TrainConfig)
    existing: Existing = "refuse"


def run_teacher_job(job: TeacherJob, progress: bool = True) -> dict:
    """Train the teacher (resuming an interrupted run when asked) and commit its checkpoint at
    ``job.out``, its per-epoch metrics and curves beside it (written just before the checkpoint
    lands: a checkpoint at ``out`` always has its own); returns the final metrics (test
    accuracies, the per-epoch history, the paths written under ``outputs``)."""
    train_set = load_dataset(job.dataset, "train", job.num_points)
    test_set = load_dataset(job.dataset, "test", job.num_points)
    spec = teacher_spec(job.model, train_set.num_classes, job.options)
    with RunDirectory(job.out, job.existing, resume_settings(job, train_set.fingerprint()),
                      resume_defaults(TeacherJob)) as run:
        outputs = {kind: str(path) for kind, path in teacher_files(job.out).items()}
        if run.finished:
            metrics = load_checkpoint(job.out).metrics
            run.check_finished(metrics.get("settings", {}))
            return {**metrics, "outputs": outputs}
        checkpoint = train_classifier(spec, train_set, test_set, job.train, progress=progress, run=run)
        checkpoint.metrics["settings"] = run.settings
        save_checkpoint(run.result, checkpoint)
        write_teacher_history(job.out, checkpoint.metrics["history"])
        run.commit()
    return {**checkpoint.metrics, "outputs": outputs}


def resume_settings(job, dataset_fingerprint: str) -> dict:
    """What must not change between a run and its resumption: the job without its output, its
    ``existing`` mode, its device (a run may continue on another device) and how often it is
    tested (``eval_every``: the training is the same) or from which epoch a student's weights are
    averaged (``average_from``: the same; checked against the resume state instead,
    pointdistill.distill.resumed_average), plus the data."""
    settings = dataclasses.asdict(job)
    for name in ("out", "existing"):
        settings.pop(name)
    settings["train"].pop("device")
    settings["train"].pop("eval_every", None)
    settings["train"].pop("average_from", None)
    settings["dataset_fingerprint"] = dataset_fingerprint
    return settings


def resume_defaults(job_class) -> dict:
    """The default of each field of the job dataclass ``job_class`` that has one (a config as its
    dict), nested like ``resume_settings``: what a run saved before that field existed did."""
    defaults = {}
    for spec in dataclasses.fields(job_class):
        if spec.default is not dataclasses.MISSING:
            defaults[spec.name] = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            value = spec.default_factory()
            defaults[spec.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return defaults

"""Supervised training and evaluation of full-precision classifiers (the teacher)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pointdistill.augment import AugmentPolicy, apply, augmentation_params
from pointdistill.binary.point_pool import check_training_kernel
from pointdistill.data import PointCloudSet
from pointdistill.models import Checkpoint, batched_forward, create_model, resolve_device


@dataclass(frozen=True)
class TrainConfig:
    """Adam + cosine schedule; each epoch draws one fresh augmentation per shape. kernel: "fast"
    (the last point layer, BatchNorm and max fused on the CPU) or "reference" (plain autograd);
    both compute the same gradients within float32 rounding, CUDA always runs the reference."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 256
    policy: AugmentPolicy = field(default_factory=AugmentPolicy)
    kernel: str = "fast"

    def __post_init__(self):
        check_training_kernel(self.kernel)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")


def accuracy_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """overall accuracy and mean per-class accuracy (classes absent from ``labels`` skipped), in [0, 1]."""
    correct = (logits.argmax(dim=1) == labels).float()
    per_class = [correct[labels == c].mean().item() for c in range(num_classes) if (labels == c).any()]
    return {"overall_accuracy": correct.mean().item(), "mean_class_accuracy": float(np.mean(per_class))}


def evaluate(model: torch.nn.Module, dataset: PointCloudSet, batch_size: int = 256,
             device: str | torch.device = "cpu") -> dict[str, float]:
    """Accuracy of ``model`` on the un-augmented shapes of ``dataset``."""
    out = batched_forward(model, torch.from_numpy(dataset.points), batch_size, device)
    return accuracy_metrics(out.logits, torch.from_numpy(dataset.labels), dataset.num_classes)


def train_classifier(spec: dict, train_set: PointCloudSet, test_set: PointCloudSet,
                     config: TrainConfig, progress: bool = True) -> Checkpoint:
    """Train the model described by ``spec`` on ``train_set``; return its checkpoint with
    per-epoch history and final test accuracy in ``metrics``."""
    if list(test_set.class_names) != list(train_set.class_names):
        raise ValueError(f"test split {test_set.source} has other class names than {train_set.source}")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = create_model(spec).to(device)
    model.training_kernel = config.kernel
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train_set) // config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    points = torch.from_numpy(train_set.points)
    labels = torch.from_numpy(train_set.labels)
    order_rng = torch.Generator().manual_seed(config.seed)
    history = []
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train_set), generator=order_rng)
        # One augmentation per shape per epoch, drawn by the same counter-based generator as records.
        params = torch.from_numpy(augmentation_params(
            config.policy, config.seed, np.arange(len(train_set)), np.full(len(train_set), epoch)))
        total_loss, total_correct = 0.0, 0
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
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(index)
            total_correct += (logits.argmax(1) == target).sum().item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        test = evaluate(model, test_set, config.eval_batch_size, device)
        history.append({"epoch": epoch + 1, "train_loss": total_loss / len(train_set),
                        "train_accuracy": total_correct / len(train_set), **{f"test_{k}": v for k, v in test.items()}})
        if progress:
            last = history[-1]
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}  loss {last['train_loss']:.4f}  "
                       f"train acc {last['train_accuracy']:.3f}  test OA {test['overall_accuracy']:.3f}  "
                       f"mAcc {test['mean_class_accuracy']:.3f}")
    return Checkpoint(
        spec=model.spec,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        class_names=list(train_set.class_names),
        dataset={"name": train_set.name, "fingerprint": train_set.fingerprint(), "num_points": train_set.num_points},
        metrics={"history": history, **{k: v for k, v in history[-1].items() if k.startswith("test_")}},
    )

"""What a training run leaves behind: checkpoint, per-epoch Parquet, curves PNG, summary JSON."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from torch import nn

from pointdistill.models import Checkpoint, save_checkpoint
from pointdistill.parquet import parquet_bytes
from pointdistill.storage import write_bytes_atomically


def float_bytes(model: nn.Module) -> int:
    """Bytes of the model's inference state with every parameter and floating buffer in float32."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    return sum(t.numel() * 4 for t in tensors)


def student_sizes(checkpoint: Checkpoint) -> dict:
    """The sizes of a binary student, defined once for every command and the README:
    ``float_bytes`` (float_bytes of the model as trained) and ``packed_bytes``, the size of the
    ``.pdbn`` model file that ``pointdistill export`` writes for it and the engine runs (binary
    weights at 1 bit in 64-bit words, BatchNorm and scales folded into int32 thresholds, the
    float32 first layer, pooled-layer scales and classifier, and the file's header). A student
    that export refuses (XNOR-Net) has ``packed_bytes`` None and the reason in ``not_packed``."""
    from pointdistill.engine.export import ExportError, export_student
    from pointdistill.engine.model_file import encode_network

    sizes = {"float_bytes": float_bytes(checkpoint.build_model()), "packed_bytes": None, "not_packed": None}
    try:
        sizes["packed_bytes"] = len(encode_network(export_student(checkpoint)))
    except ExportError as error:
        sizes["not_packed"] = str(error)
    return sizes


def plot_curves(history: list[dict], title: str, reference: float | None = None,
                losses: dict[str, str] | None = None) -> bytes:
    """Losses (left, log scale) and accuracies (right) per epoch, as PNG bytes. ``losses`` maps
    history keys to legend labels (default: every ``loss_<term>`` key, labelled by its term).
    Markers show every epoch (accuracies: every evaluated one; a 1-epoch run is a point, not an
    empty plot), epochs are whole numbers, test OA is drawn above mean-class accuracy,
    ``reference`` (a fraction, e.g. the teacher's test OA) is a dashed line, and the legends sit
    below the axes, off the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

    epochs = [row["epoch"] for row in history]
    marker = {"marker": "o", "markersize": 3 if len(epochs) > 30 else 5}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    if losses is None:
        losses = {k: k.removeprefix("loss_") for k in sorted(history[0]) if k.startswith("loss_")}
    for key, label in losses.items():
        left.plot(epochs, [row[key] for row in history], label=label, **marker)
    left.set(xlabel="epoch", ylabel="loss (unweighted terms)", yscale="log", title="losses")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 0.5, 2 rather than 5e-1, 2e0, and between decades
    left.yaxis.set_major_formatter(plain)
    values = [row[key] for row in history for key in losses if row[key] > 0]
    decades = math.log10(max(values) / min(values)) if values else 0.0
    left.yaxis.set_minor_locator(LogLocator(base=10, subs=(2, 3, 5) if decades > 1 else (2, 3, 4, 5, 6, 8)))
    left.yaxis.set_minor_formatter(plain)
    curves = (("train_accuracy", "train", {"color": "tab:gray", "linewidth": 1}),
              ("validation_overall_accuracy", "validation OA", {"color": "tab:green", "linewidth": 1}),
              ("test_mean_class_accuracy", "test mean-class", {"color": "tab:blue", "linewidth": 1}),
              ("test_overall_accuracy", "test OA", {"color": "tab:red", "linewidth": 2}),
              ("averaged_test_overall_accuracy", "test OA, averaged weights",
               {"color": "tab:orange", "linewidth": 2}))
    curves = tuple(curve for curve in curves if curve[0] in history[0])
    for key, label, style in curves:  # test OA (and its averaged weights') last: on top; epochs not evaluated (NaN) left out
        shown = [(row["epoch"], 100 * row[key]) for row in history if not math.isnan(row[key])]
        right.plot(*zip(*shown), label=label, **style, **marker)
    if reference is not None:
        right.axhline(100 * reference, color="black", linestyle="--", linewidth=1,
                      label=f"teacher test OA {100 * reference:.2f}")
    right.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for axes in (left, right):
        if len(epochs) <= 10:  # a short run: every epoch a tick, with room on both sides
            axes.set_xticks(epochs)
            axes.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    return png.getvalue()


def run_files(name: str) -> dict[str, str]:
    """The file names of a student run directory, by kind."""
    return {"checkpoint": f"{name}.pt", "metrics": "metrics.parquet", "curves": "curves.png",
            "summary": "summary.json"}


def write_run(out_dir: str | Path, checkpoint, history: list[dict], summary: dict, name: str) -> None:
    """Write ``{name}.pt``, ``metrics.parquet``, ``curves.png`` and ``summary.json`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / file for kind, file in run_files(name).items()}
    save_checkpoint(paths["checkpoint"], checkpoint)
    paths["metrics"].write_bytes(parquet_bytes(history))
    paths["curves"].write_bytes(plot_curves(history, title=name,
                                            reference=summary.get("teacher_test_overall_accuracy")))
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")


def teacher_files(checkpoint: str | Path) -> dict[str, Path]:
    """What a teacher run leaves, by kind: the checkpoint and, beside it,
    ``<checkpoint>.metrics.parquet`` (one row per epoch) and ``<checkpoint>.curves.png``."""
    checkpoint = Path(checkpoint)
    return {"checkpoint": checkpoint, "metrics": checkpoint.with_name(checkpoint.name + ".metrics.parquet"),
            "curves": checkpoint.with_name(checkpoint.name + ".curves.png")}


def write_teacher_history(checkpoint: str | Path, history: list[dict]) -> None:
    """Write a teacher run's metrics and curves beside ``checkpoint`` (each file atomically)."""
    paths = teacher_files(checkpoint)
    write_bytes_atomically(paths["metrics"], parquet_bytes(history))
    write_bytes_atomically(paths["curves"], plot_curves(history, title=f"teacher {paths['checkpoint'].name}",
                                                        losses={"train_loss": "cross-entropy"}))

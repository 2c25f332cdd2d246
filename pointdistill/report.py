"""What a training run leaves behind: checkpoint, per-epoch Parquet, curves PNG, summary JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from torch import nn

from pointdistill.binary import binary_layers
from pointdistill.models import save_checkpoint


def model_size_bytes(model: nn.Module) -> dict[str, int]:
    """Storage of the model's inference state: ``float_bytes`` with every parameter and buffer
    in float32; ``packed_bytes`` with binary-layer weights at 1 bit each (packed in bytes) and
    everything else (first/last layers, BatchNorm, scales) in float32."""
    binary = {id(layer.weight) for layer in binary_layers(model)}
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    float_bytes = sum(t.numel() * 4 for t in tensors)
    packed = sum(-(-t.numel() // 8) if id(t) in binary else t.numel() * 4 for t in tensors)
    return {"float_bytes": float_bytes, "packed_bytes": packed}


def plot_curves(history: list[dict], path: Path, title: str, reference: float | None = None) -> None:
    """Losses (left, log scale) and accuracies (right) per epoch, as a PNG at ``path``. Markers
    show every epoch (a 1-epoch run is a point, not an empty plot), epochs are whole numbers,
    test OA is drawn above mean-class accuracy, ``reference`` (a fraction, e.g. the teacher's
    test OA) is a dashed line, and the legends sit below the axes, off the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    marker = {"marker": "o", "markersize": 3 if len(epochs) > 30 else 5}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    for key in sorted(k for k in history[0] if k.startswith("loss_")):
        left.plot(epochs, [row[key] for row in history], label=key.removeprefix("loss_"), **marker)
    left.set(xlabel="epoch", ylabel="loss (unweighted terms)", yscale="log", title="losses")
    curves = (("train_accuracy", "train", {"color": "tab:gray", "linewidth": 1}),
              ("test_mean_class_accuracy", "test mean-class", {"color": "tab:blue", "linewidth": 1}),
              ("test_overall_accuracy", "test OA", {"color": "tab:red", "linewidth": 2}))
    for key, label, style in curves:  # test OA last: on top
        right.plot(epochs, [100 * row[key] for row in history], label=label, **style, **marker)
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_files(name: str) -> dict[str, str]:
    """The file names of a run directory, by kind."""
    return {"checkpoint": f"{name}.pt", "metrics": "metrics.parquet", "curves": "curves.png",
            "summary": "summary.json"}


def write_run(out_dir: str | Path, checkpoint, history: list[dict], summary: dict, name: str) -> None:
    """Write ``{name}.pt``, ``metrics.parquet``, ``curves.png`` and ``summary.json`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / file for kind, file in run_files(name).items()}
    save_checkpoint(paths["checkpoint"], checkpoint)
    pq.write_table(pa.Table.from_pylist(history), paths["metrics"])
    plot_curves(history, paths["curves"], title=name, reference=summary.get("teacher_test_overall_accuracy"))
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")

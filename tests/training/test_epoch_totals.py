"""An epoch's loss and accuracy, summed on the training device: the same means as reading every
step, and a diverged step named with its terms, at once on the CPU and at the epoch's end otherwise."""

import pytest
import torch

from pointdistill.epoch_totals import EpochTotals, TrainingDiverged


def steps(count=5, batch=4, classes=3, seed=0):
    """(total, terms, logits, labels) of ``count`` steps of random values."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        terms = {"ce": torch.rand((), generator=generator), "kd": torch.rand((), generator=generator)}
        yield (0.5 * terms["ce"] + 0.5 * terms["kd"], terms, torch.randn(batch, classes, generator=generator),
               torch.randint(0, classes, (batch,), generator=generator))


def test_means_equal_the_per_step_reads_they_replace():
    totals = EpochTotals(torch.device("cpu"), ("ce", "kd"))
    sums, correct, samples = {"ce": 0.0, "kd": 0.0, "total": 0.0}, 0, 0
    for step, (total, terms, logits, labels) in enumerate(steps(), 1):
        totals.add(step, total, terms, logits, labels)
        for name, value in {**terms, "total": total}.items():
            sums[name] += float(value) * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        samples += len(labels)
    means = totals.means()
    assert list(means) == ["ce", "kd", "total", "accuracy"]  # the metrics' column order: terms, then total
    assert means == {**{k: v / samples for k, v in sums.items()}, "accuracy": correct / samples}
    totals.raise_if_diverged(1, 1, 5)  # all finite: nothing


def test_the_first_non_finite_step_is_named_with_its_terms_at_the_epochs_end():
    totals = EpochTotals(torch.device("cpu"), ("ce", "kd"))
    for step, (total, terms, logits, labels) in enumerate(steps(), 1):
        if step in (3, 4):  # step 3 diverges first; step 4's values are not the ones reported
            terms = {"ce": terms["ce"], "kd": torch.tensor(float("inf") if step == 3 else 7.0)}
            total = torch.tensor(float("nan"))
        totals.add(step, total, terms, logits, labels)
        totals.after_step(2, 9, 5, "run/state.pt")  # not checked every step: training goes on to the end
    ce_at_3 = float(list(steps())[2][1]["ce"])
    with pytest.raises(TrainingDiverged, match=rf"epoch 2/9, step 3/5: the loss is nan \(ce {ce_at_3:.4g}, kd inf\)"
                                               r"; training stopped; the resume state after epoch 1 is kept at run/state.pt"):
        totals.raise_if_diverged(2, 9, 5, "run/state.pt")


def test_checked_every_step_a_diverged_step_stops_at_once():
    totals = EpochTotals(torch.device("cpu"), (), check_every_step=True)
    (total, _, logits, labels), = steps(1)
    totals.add(1, total, {}, logits, labels)
    totals.after_step(1, 3, 4)
    totals.add(2, torch.tensor(float("-inf")), {}, logits, labels)
    with pytest.raises(TrainingDiverged, match=r"epoch 1/3, step 2/4: the loss is -inf; training stopped\. Lower"):
        totals.after_step(1, 3, 4)

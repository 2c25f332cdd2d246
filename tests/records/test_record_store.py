import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from pointdistill.augment import apply
from pointdistill.data import load_dataset
from pointdistill.models import load_checkpoint
from pointdistill.records import (
    RecordingJob, RecordStoreError, RecordStoreMismatch, format_summary, open_store, prepare_store, record_chunk,
    record_in_process, store_summary,
)


@pytest.fixture()
def job(teacher_path, shapes_dir, tmp_path):
    return RecordingJob(teacher=teacher_path, dataset=shapes_dir, store=str(tmp_path / "records.zarr"),
                        augmentations=3, chunk_shapes=16, seed=5)


def read_arrays(uri: str) -> dict[str, np.ndarray]:
    group = open_store(uri)
    return {name: group[name][:] for name in ("params", "logits", "pooled", "labels", "done")}


def test_every_record_equals_the_teacher_rerun_on_the_rebuilt_input(job, shapes_dir, teacher_path):
    record_in_process(job)
    store = open_store(job.store)
    dataset = load_dataset(shapes_dir, "train", 128)
    teacher = load_checkpoint(teacher_path).build_model()
    params = torch.from_numpy(store["params"][:])  # [N, A, 6]
    n, a, _ = params.shape
    assert (n, a) == (len(dataset), 3)
    clouds = apply(torch.from_numpy(dataset.points).repeat_interleave(a, 0), params.reshape(-1, 6))
    with torch.no_grad():
        out = teacher(clouds)
    logits = torch.from_numpy(store["logits"][:].astype(np.float32)).reshape(n * a, -1)
    pooled = torch.from_numpy(store["pooled"][:].astype(np.float32)).reshape(n * a, -1)
    # fp16 storage: relative rounding 2**-11, plus a little float32 noise.
    assert torch.allclose(logits, out.logits, rtol=2**-10, atol=1e-3)
    assert torch.allclose(pooled, out.pooled, rtol=2**-10, atol=1e-3)
    assert np.array_equal(store["labels"][:], dataset.labels)
    attrs = store.attrs.asdict()
    assert attrs["status"] == "complete" and attrs["format_version"] == 1
    assert attrs["dataset"]["fingerprint"] == dataset.fingerprint()
    assert attrs["teacher"]["weights_sha256"] == load_checkpoint(teacher_path).weights_sha256()
    assert attrs["dataset"]["class_names"] == list(dataset.class_names)


def test_same_seed_gives_the_same_store_and_another_seed_does_not(job, tmp_path):
    record_in_process(job)
    again = replace(job, store=str(tmp_path / "again.zarr"))
    other = replace(job, store=str(tmp_path / "other.zarr"), seed=6)
    record_in_process(again)
    record_in_process(other)
    first, second, third = read_arrays(job.store), read_arrays(again.store), read_arrays(other.store)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert not np.array_equal(first["params"], third["params"])
    fingerprints = [store_summary(j.store)["fingerprint"] for j in (job, again, other)]
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]  # the recording's identity, not its path


@pytest.mark.parametrize("change, field", [
    ({"seed": 9}, "seed"),
    ({"augmentations": 4}, "augmentations_per_shape"),
    ({"chunk_shapes": 8}, "chunk_shapes"),
    ({"num_points": 100}, "dataset.num_points"),
])
def test_a_mismatched_rerun_is_refused_and_leaves_the_store_alone(job, change, field):
    record_in_process(job)
    before = read_arrays(job.store)
    with pytest.raises(RecordStoreMismatch, match=rf"{field}: store has"):
        prepare_store(replace(job, **change))
    after = read_arrays(job.store)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_another_teacher_is_refused(job, teacher_path, tmp_path):
    record_in_process(job)
    checkpoint = load_checkpoint(teacher_path)
    checkpoint.state_dict = {k: v + 1 if v.is_floating_point() else v for k, v in checkpoint.state_dict.items()}
    from pointdistill.models import save_checkpoint

    save_checkpoint(tmp_path / "other-teacher.pt", checkpoint)
    with pytest.raises(RecordStoreMismatch, match="teacher.weights_sha256"):
        prepare_store(replace(job, teacher=str(tmp_path / "other-teacher.pt")))


def test_store_opens_read_only_for_readers(job):
    record_in_process(job)
    store = open_store(job.store)
    with pytest.raises(Exception):
        store["logits"][0] = 0
    with pytest.raises(RecordStoreError, match="no record store here|not a pointdistill record store"):
        open_store(job.store + "-missing")


def test_an_unknown_format_version_is_refused(job):
    record_in_process(job)
    zarr.open_group(job.store, mode="r+").attrs["format_version"] = 99
    with pytest.raises(RecordStoreError, match="format version 99"):
        open_store(job.store)


def test_a_damaged_chunk_fails_its_checksum_on_read(job):
    record_in_process(job)
    chunk_file = Path(job.store) / "logits" / "c" / "1" / "0" / "0"
    data = bytearray(chunk_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk_file.write_bytes(bytes(data))
    store = open_store(job.store)
    store["logits"][:16]  # chunk 0 is intact
    with pytest.raises(Exception, match="(?i)checksum|crc"):
        store["logits"][16:32]


def test_summary_reports_sizes_and_teacher_accuracy_on_the_records(job, shapes_dir):
    record_in_process(job)
    summary = store_summary(job.store)
    arrays = read_arrays(job.store)
    expected = (arrays["logits"].argmax(2) == arrays["labels"][:, None]).mean()
    assert summary["N"] == 72 and summary["A"] == 3 and summary["chunks_done"] == summary["chunks"] == 5
    assert summary["teacher_accuracy"] == pytest.approx(expected)
    assert summary["bytes_per_record"] == pytest.approx(summary["bytes_stored"]["total"] / (72 * 3))
    json.dumps(summary)
    teacher = load_checkpoint(job.teacher)  # its own test figure is printed with the set it was measured on
    assert (f"test OA {teacher.metrics['test_overall_accuracy']:.4f} on {teacher.dataset['name']}'s test split"
            in format_summary(summary))


KILL_MID_CHUNK = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from pointdistill.records import RecordingJob, prepare_store, record_chunk
    from pointdistill.records.schema import open_group
    job = RecordingJob(teacher=sys.argv[1], dataset=sys.argv[2], store=sys.argv[3],
                       augmentations=3, chunk_shapes=16, seed=5)
    plan = prepare_store(job)
    record_chunk(plan, 0)
    record_chunk(plan, 1)
    # Chunk 2: the process dies with its first array half-written and the rest untouched.
    group = open_group(job.store, "r+")
    group["params"][32:40] = np.full((8, 3, 6), 7.0, np.float32)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_recording_killed_mid_chunk_resumes_to_the_same_store(job, tmp_path):
    reference = replace(job, store=str(tmp_path / "reference.zarr"))
    record_in_process(reference)
    killed = subprocess.run([sys.executable, "-c", KILL_MID_CHUNK, job.teacher, job.dataset, job.store])
    assert killed.returncode == -signal.SIGKILL
    assert open_store(job.store).attrs["status"] == "recording"
    assert sorted(prepare_store(job).pending) == [2, 3, 4]
    assert sorted(result["chunk"] for result in record_in_process(job)) == [2, 3, 4]
    resumed, uninterrupted = read_arrays(job.store), read_arrays(reference.store)
    assert all(np.array_equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_teacher_and_dataset_with_other_classes_are_refused(job, tmp_path):
    root = tmp_path / "renamed"
    dataset = load_dataset(job.dataset, "train", 256)
    from pointdistill.data import write_npz_split

    write_npz_split(root, "train", dataset.points, dataset.labels, [f"c{i}" for i in range(dataset.num_classes)])
    with pytest.raises(ValueError, match="must be identical"):
        prepare_store(replace(job, dataset=str(root)))
    assert not os.path.exists(job.store)


def test_fsspec_urls_for_store_and_dataset_give_the_same_records(job, tmp_path):
    record_in_process(job)
    remote = replace(job, store="memory://pointdistill-test/records.zarr", dataset="file://" + job.dataset)
    record_in_process(remote)
    local, in_memory = read_arrays(job.store), read_arrays(remote.store)
    assert all(np.array_equal(local[k], in_memory[k]) for k in local)
    assert store_summary(remote.store)["status"] == "complete"


def test_a_teacher_file_replaced_mid_recording_is_caught(job, tmp_path):
    import shutil

    teacher = tmp_path / "teacher.pt"
    shutil.copy(job.teacher, teacher)
    job = replace(job, teacher=str(teacher))
    plan = prepare_store(job)
    record_chunk(plan, 0)
    checkpoint = load_checkpoint(str(teacher))
    checkpoint.state_dict = {k: v * 2 if v.is_floating_point() else v for k, v in checkpoint.state_dict.items()}
    from pointdistill.models import save_checkpoint

    save_checkpoint(teacher, checkpoint)
    # This process already holds the old teacher; a fresh worker would load the new file.
    from pointdistill.records import writer

    writer._TEACHERS.entries.clear()
    with pytest.raises(RecordStoreError, match="teacher weights changed since the store was prepared"):
        record_chunk(plan, 1)
    assert open_store(job.store)["done"][:].tolist() == [1, 0, 0, 0, 0]

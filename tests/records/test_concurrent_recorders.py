"""Two recorders on one new store: the recording's identity is claimed atomically, so another
teacher is refused (never a mixed store marked complete), and equal settings share the chunks."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pointdistill.models import load_checkpoint, save_checkpoint
from pointdistill.records import RecordingJob, RecordStoreError, open_store, prepare_store, verify_store

REPO = Path(__file__).resolve().parents[2]
RECORDER = """
import json, sys, time
from pathlib import Path
from pointdistill.records import RecordingJob, RecordStoreMismatch, finalize_store, prepare_store, record_chunk
teacher, dataset, store, go = sys.argv[1:5]
job = RecordingJob(teacher=teacher, dataset=dataset, store=store, augmentations=2, chunk_shapes=6, seed=1)
while not Path(go).exists():
    time.sleep(0.005)
try:
    plan = prepare_store(job)
except RecordStoreMismatch as error:
    print(json.dumps({"refused": str(error)}))
    sys.exit(0)
recorded = [k for k in plan.pending if not record_chunk(plan, k)["skipped"]]
print(json.dumps({"recorded": recorded, "complete": finalize_store(job)}))
"""


def race(teachers: list[str], dataset: str, store: Path, tmp_path: Path) -> list[dict]:
    """Start one recorder per teacher, release them at the same instant, return their reports."""
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", RECORDER, t, dataset, str(store), str(go)], cwd=REPO,
                                  stdout=subprocess.PIPE, text=True) for t in teachers]
    time.sleep(3)  # both imported and waiting
    go.touch()
    reports = []
    for process in processes:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def test_a_recorder_with_another_teacher_is_refused_and_the_store_is_never_mixed(teacher_path, shapes_dir, tmp_path):
    other = load_checkpoint(teacher_path)
    other.state_dict = {k: v * 1.01 if v.is_floating_point() else v for k, v in other.state_dict.items()}
    save_checkpoint(tmp_path / "other.pt", other)
    store = tmp_path / "records.zarr"
    reports = race([teacher_path, str(tmp_path / "other.pt")], shapes_dir, store, tmp_path)
    refused = [r for r in reports if "refused" in r]
    assert len(refused) == 1 and "teacher.weights_sha256" in refused[0]["refused"]
    winner = reports[1 - reports.index(refused[0])]
    assert winner["complete"]
    winning_sha = load_checkpoint([teacher_path, str(tmp_path / "other.pt")][reports.index(winner)]).weights_sha256()
    assert open_store(str(store)).attrs["teacher"]["weights_sha256"] == winning_sha
    assert verify_store(str(store), teacher=[teacher_path, str(tmp_path / "other.pt")][reports.index(winner)],
                        dataset=shapes_dir, sample=24)["ok"]


def test_recorders_with_equal_settings_share_the_chunks(teacher_path, shapes_dir, tmp_path):
    store = tmp_path / "records.zarr"
    reports = race([teacher_path, teacher_path], shapes_dir, store, tmp_path)
    assert all(r.get("complete") for r in reports), reports
    chunks = open_store(str(store)).attrs["num_chunks"]  # 12 chunks of 6 shapes
    recorded = reports[0]["recorded"] + reports[1]["recorded"]
    assert set(recorded) == set(range(chunks))
    assert len(recorded) <= chunks + 3, reports  # only chunks in flight where they meet, not all twice
    assert verify_store(str(store), teacher=teacher_path, dataset=shapes_dir, sample=24)["ok"]


def test_a_damaged_claim_is_an_error_naming_it(teacher_path, shapes_dir, tmp_path):
    store = tmp_path / "records.zarr"
    store.mkdir()
    (store / "recording.json").write_text("")  # e.g. a disk that filled up under another tool
    with pytest.raises(RecordStoreError, match="recording.json is damaged"):
        prepare_store(RecordingJob(teacher=teacher_path, dataset=shapes_dir, store=str(store), augmentations=2))


def test_the_store_attributes_appear_whole_never_key_by_key(teacher_path, shapes_dir, tmp_path, monkeypatch):
    """A second recorder may read the group's zarr.json at any moment; every version written
    must be either without attributes or with all of them (zarr's attrs.update writes once per
    key, and a reader in between once saw "format" without "seed": a spurious refusal)."""
    import zarr.storage

    written = []
    original = zarr.storage.LocalStore.set

    async def recording_set(self, key, value):
        if key == "zarr.json":
            written.append(json.loads(value.to_bytes()).get("attributes", {}))
        return await original(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", recording_set)
    prepare_store(RecordingJob(teacher=teacher_path, dataset=shapes_dir, store=str(tmp_path / "records.zarr"),
                               augmentations=2, chunk_shapes=6, seed=1))
    with_attributes = [attrs for attrs in written if attrs]
    assert len(with_attributes) == 1 and {"format", "seed", "chunk_shapes"} <= set(with_attributes[0])

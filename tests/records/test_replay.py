import shutil

import numpy as np
import pytest
import torch
import zarr

from pointdistill.augment import apply
from pointdistill.data import load_dataset, write_npz_split
from pointdistill.records import RecordStoreError, ReplayLoader, open_store


@pytest.fixture()
def train_set(shapes_dir):
    return load_dataset(shapes_dir, "train", 128)


@pytest.mark.parametrize("in_memory", [True, False])
def test_replay_yields_exactly_the_recorded_targets_for_the_rebuilt_inputs(recorded_store, train_set, in_memory):
    store = open_store(recorded_store)
    params, logits, pooled = store["params"][:], store["logits"][:], store["pooled"][:]
    loader = ReplayLoader(recorded_store, train_set, batch_size=10, seed=1, in_memory=in_memory, drop_last=False)
    seen = []
    for batch in loader.epoch(0):
        i, a = batch.shape_index.numpy(), batch.augmentation_index.numpy()
        rebuilt = apply(torch.from_numpy(train_set.points[i]), torch.from_numpy(params[i, a]))
        assert torch.equal(batch.points, rebuilt)
        assert np.array_equal(batch.teacher_logits.numpy(), logits[i, a].astype(np.float32))
        assert np.array_equal(batch.teacher_pooled.numpy(), pooled[i, a].astype(np.float32))
        assert np.array_equal(batch.labels.numpy(), train_set.labels[i])
        seen.extend(i.tolist())
    assert sorted(seen) == list(range(len(train_set)))  # every shape once per epoch


def test_replay_is_seeded_and_varies_the_augmentation_across_epochs(recorded_store, train_set):
    def epoch(seed, e):
        return [(b.shape_index.tolist(), b.augmentation_index.tolist())
                for b in ReplayLoader(recorded_store, train_set, 8, seed=seed).epoch(e)]

    assert epoch(0, 0) == epoch(0, 0)
    assert epoch(0, 0) != epoch(0, 1) and epoch(0, 0) != epoch(1, 0)
    choices = {a for e in range(4) for _, augs in epoch(0, e) for a in augs}
    assert choices == {0, 1, 2}


def test_replay_refuses_other_data(recorded_store, train_set, shapes_dir, tmp_path):
    with pytest.raises(RecordStoreError, match="points per shape: store 128, dataset 100"):
        ReplayLoader(recorded_store, load_dataset(shapes_dir, "train", 100), 8)
    moved = train_set.points.copy()
    moved[0, 0, 0] += 0.01
    write_npz_split(tmp_path / "moved", "train", moved, train_set.labels, list(train_set.class_names))
    with pytest.raises(RecordStoreError, match="dataset fingerprint"):
        ReplayLoader(recorded_store, load_dataset(tmp_path / "moved", "train", 128), 8)
    names = [f"k{i}" for i in range(train_set.num_classes)]
    write_npz_split(tmp_path / "renamed", "train", train_set.points, train_set.labels, names)
    with pytest.raises(RecordStoreError, match="class names differ"):
        ReplayLoader(recorded_store, load_dataset(tmp_path / "renamed", "train", 128), 8)


def test_an_incomplete_store_is_refused_unless_its_completed_part_is_asked_for(recorded_store, train_set, tmp_path):
    copy = tmp_path / "partial.zarr"
    shutil.copytree(recorded_store, copy)
    group = zarr.open_group(str(copy), mode="r+")
    group["done"][1] = 0
    group.attrs["status"] = "recording"
    with pytest.raises(RecordStoreError, match=r"incomplete \(4/5 chunks done\)"):
        ReplayLoader(str(copy), train_set, 8)
    loader = ReplayLoader(str(copy), train_set, 8, use_completed_part=True, drop_last=False)
    shapes = sorted(i for b in loader.epoch(0) for i in b.shape_index.tolist())
    assert shapes == [i for i in range(len(train_set)) if not 16 <= i < 32]
    group["done"][:] = 0  # nothing recorded yet: refused even when the completed part is asked for
    with pytest.raises(RecordStoreError, match="has no completed chunk"):
        ReplayLoader(str(copy), train_set, 8, use_completed_part=True)


@pytest.mark.parametrize("in_memory", [True, False])
def test_held_out_shapes_are_never_replayed_and_the_rest_once_per_epoch(recorded_store, train_set, in_memory):
    held_out = np.array([0, 5, 6, 31, len(train_set) - 1])
    store = open_store(recorded_store)
    params = store["params"][:]
    loader = ReplayLoader(recorded_store, train_set, batch_size=10, seed=1, in_memory=in_memory, drop_last=False,
                          held_out=held_out)
    for e in range(2):
        seen = []
        for batch in loader.epoch(e):
            i, a = batch.shape_index.numpy(), batch.augmentation_index.numpy()
            assert torch.equal(batch.points, apply(torch.from_numpy(train_set.points[i]),
                                                   torch.from_numpy(params[i, a])))
            seen.extend(i.tolist())
        assert sorted(seen) == sorted(set(range(len(train_set))) - set(held_out.tolist()))
    assert len(loader) == -(-(len(train_set) - held_out.size) // 10)

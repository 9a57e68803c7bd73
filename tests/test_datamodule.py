"""Training crops: the augmentations that make other footage of the same action out of one video."""

import math

import numpy as np
import pytest
import torch

from pipeline.data.datamodule import CropDataset
from pipeline.data.features import KCONF, KXY, POSE_DIM, reframe, tilted


def frames(n: int, dim: int = 4 + POSE_DIM) -> torch.Tensor:
    """A sequence whose first feature is the frame index, a person present with a box at the centre."""
    x = torch.zeros(n, dim)
    x[:, 0] = torch.arange(n, dtype=torch.float32)
    x[:, -POSE_DIM] = 1.0
    x[:, -POSE_DIM + 2 : -POSE_DIM + 6] = torch.tensor([0.6, 0.5, 0.2, 0.4])
    return x


def test_speed_plays_crops_faster_and_slower_in_order():
    torch.manual_seed(0)
    ds = CropDataset([frames(200)], [0], clip_len=32, flip=0, noise=0, std=torch.ones(1), speed=1.0)
    steps = set()
    for _ in range(50):
        x, _, _ = ds[0]
        idx = x[:, 0]
        assert len(x) <= 32 and (idx[1:] >= idx[:-1]).all()  # never backwards
        steps.add(round(float(idx[-1] - idx[0]) / (len(x) - 1), 1))
    assert min(steps) <= 0.7 and max(steps) >= 1.5  # slowed down (frames repeat) and sped up (frames skipped)


def test_short_videos_are_taken_whole_without_padding():
    ds = CropDataset([frames(10)], [0], clip_len=32, flip=0, noise=0, std=torch.ones(1), speed=0.5)
    for _ in range(10):
        x, _, _ = ds[0]
        assert 6 <= len(x) <= 15 and float(x[0, 0]) == 0.0  # the whole video, at some speed


def test_reframe_zooms_about_the_centre_and_moves_the_box_only():
    x = frames(3)
    x[2, -POSE_DIM:] = 0.0  # nobody in the last frame
    y = reframe(x, 2.0, 0.1, 0.0)
    pose = y[:2, -POSE_DIM:]
    assert torch.allclose(pose[:, 2:6], torch.tensor([0.8, 0.5, 0.4, 0.8]).expand(2, 4))
    assert torch.equal(y[:, : -POSE_DIM + 2], x[:, : -POSE_DIM + 2]) and torch.equal(y[:, -POSE_DIM + 6 :], x[:, -POSE_DIM + 6 :])
    assert (y[2, -POSE_DIM:] == 0).all()


def test_min_len_gives_crops_of_every_length_and_drop_loses_whole_frames():
    torch.manual_seed(0)
    ds = CropDataset([frames(100)], [0], clip_len=16, flip=0, noise=0, std=torch.ones(1), min_len=4, drop=0.5)
    lengths, lost = set(), 0
    for _ in range(60):
        x, _, _ = ds[0]
        lengths.add(len(x))
        gone = (x[:, -POSE_DIM:] == 0).all(1)
        assert torch.equal(gone, (x == 0).all(1))  # a lost frame is all zeros, the others untouched
        lost += int(gone.sum())
    assert lengths == set(range(4, 17)) and lost > 0


def test_tilt_and_shear_move_the_keypoints_once_per_crop_and_keep_nobody_empty():
    torch.manual_seed(0)
    x = frames(40)
    x[:, -POSE_DIM:][:, KXY] = torch.rand(34) * 0.8 + 0.1  # one pose held still
    x[:, -POSE_DIM:][:, KCONF] = 0.9
    x[5, -POSE_DIM:] = 0.0  # nobody in frame 5
    ds = CropDataset([x], [0], clip_len=40, flip=0, noise=0, std=torch.ones(1), tilt=20, shear=0.3)
    changes = set()
    for _ in range(10):
        y, _, _ = ds[0]
        pose = y[:, -POSE_DIM:]
        assert (pose[5] == 0).all() and torch.equal(y[:, :-POSE_DIM], x[:, :-POSE_DIM])  # nobody, pooled: untouched
        assert torch.equal(pose[:, 2:4], x[:, -POSE_DIM + 2 : -POSE_DIM + 4])  # the box keeps its centre
        kept = torch.cat([pose[:5], pose[6:]])
        assert torch.allclose(kept, kept[:1].expand_as(kept))  # the same turn for every frame of a crop
        changes.add(round(float((pose[0, KXY] - x[0, -POSE_DIM:][KXY]).abs().max()), 3))
    assert len(changes) == 10 and min(changes) > 0  # a new draw for every crop


def test_balance_draws_each_class_as_often_whatever_its_size():
    from pipeline.data.datamodule import ActionDataModule

    dm = ActionDataModule.__new__(ActionDataModule)  # the loader alone: no dataset on disk needed
    dm.class_names, dm.batch_size, dm.num_workers = ["big", "small"], 8, 0
    dm.clip_len, dm.flip, dm.noise, dm.speed, dm.zoom, dm.drop, dm.min_len, dm.tilt, dm.shear = 4, 0, 0, 0, 0, 0, None, 0, 0
    dm.std = torch.ones(1)
    labels = [0] * 90 + [1] * 10
    dm.data, dm.aspects = {"train": ([frames(4) for _ in labels], labels, [])}, {}
    for balance, low, high in ((False, 0.05, 0.15), (True, 0.4, 0.6)):
        dm.balance = balance
        torch.manual_seed(0)
        drawn = torch.cat([b["y"] for _ in range(20) for b in dm.train_dataloader()]).float()
        assert low < drawn.mean() < high  # the small class's share of the crops drawn


def test_each_video_is_tilted_in_its_own_frame_shape():
    """A 4:3 or portrait video's skeleton turns in its own pixels: the crop is ``tilted`` at that video's aspect."""
    x = frames(8)
    x[:, -POSE_DIM:][:, KXY] = torch.rand(34) * 0.8 + 0.1
    x[:, -POSE_DIM:][:, KCONF] = 0.9
    crops = {}
    for aspect in (4 / 3, 9 / 16, None):
        torch.manual_seed(0)
        crops[aspect] = CropDataset([x], [0], clip_len=8, flip=0, noise=0, std=torch.ones(1), tilt=20, aspects=[aspect])[0][0]
    torch.manual_seed(0)
    torch.randint(0, 1, ())  # the crop's start, drawn first
    angle, sh = (torch.rand(2) * 2 - 1).mul(torch.tensor([math.radians(20), 0.0])).tolist()
    for aspect, crop in crops.items():
        assert torch.allclose(crop, tilted(x, angle, sh, aspect or 16 / 9))
    assert not torch.allclose(crops[4 / 3], crops[None]) and not torch.allclose(crops[9 / 16], crops[4 / 3])


def test_setup_reads_each_training_videos_aspect_from_its_entry_or_its_header(tmp_path):
    """Entries written since frame sizes are cached carry the aspect; older ones fall back to the file's header."""
    from conftest import make_dataset, seeing_weights

    from pipeline.data.cache import FeatureCache
    from pipeline.data.datamodule import ActionDataModule
    from pipeline.data.features import ExtractorConfig

    root = make_dataset(tmp_path / "data")  # 80x64 clips
    extractor = ExtractorConfig(weights=str(seeing_weights(tmp_path / "w.pt")), imgsz=64, layers=(16,))
    dm = ActionDataModule(str(root), root=str(root), extractor=extractor, cache_dir=str(tmp_path / "cache"), tilt=10, split="stratified", num_folds=2)
    dm.prepare_features("fit", {"accelerator": "cpu", "devices": 1})
    videos = dm.splits["train"]
    first = dm.cache.entry(videos[0].path, dm.root)
    assert FeatureCache.load(first).frame_size == (80, 64)
    with np.load(first) as z:  # as an entry written before frame sizes were
        old = {k: z[k] for k in z.files if k != "frame_size"}
    np.savez(first, **old)
    assert FeatureCache.load(first).aspect is None
    dm.setup("fit")
    assert dm.aspects["train"] == [80 / 64] * len(videos)
    # and with no header to read either: 16:9, said once in a line
    import pipeline.data.datamodule as datamodule

    again = ActionDataModule(str(root), root=str(root), extractor=extractor, cache_dir=str(tmp_path / "cache"), tilt=10, split="stratified", num_folds=2)
    again.prepare_features("fit", {"accelerator": "cpu", "devices": 1})
    with pytest.MonkeyPatch.context() as mp, pytest.warns(UserWarning, match=r"1 training video\(s\) of unknown frame size.*16:9"):
        mp.setattr(datamodule, "frame_aspect", lambda path: None)
        again.setup("fit")
    assert again.aspects["train"].count(None) == 1

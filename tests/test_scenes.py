"""pipeline.data.scenes: clips of one scene are one group whatever their class; the signatures are cached."""

import pytest
from conftest import write_clip

from pipeline.data import scenes
from pipeline.data.videoset import Video, make_splits


def clips(folder):
    out = []
    for label, scene, speed in [(0, 1, 1.0), (0, 1, 2.0), (1, 1, 3.0), (0, 2, 1.0), (1, 2, 2.0), (1, 2, 3.0), (0, 3, 1.0), (1, 3, 2.0)]:
        out.append(Video(write_clip(folder / f"s{scene}_{speed:.0f}.avi", frames=24, seed=scene, speed=speed), label))  # the seed draws the background
    return out


def test_scene_groups_follow_the_background_and_are_cached(tmp_path, monkeypatch):
    videos = clips(tmp_path / "clips")
    broken = tmp_path / "clips" / "broken.avi"
    broken.write_bytes(b"not a video")
    grouped = scenes.with_scene_groups([*videos, Video(broken, 1)], tmp_path / "cache")
    group = {v.path.name: v.group for v in grouped}
    assert group["s1_1.avi"] == group["s1_2.avi"] == group["s1_3.avi"]
    assert group["s2_1.avi"] == group["s2_2.avi"] == group["s2_3.avi"] != group["s1_1.avi"]
    assert group["s3_1.avi"] == group["s3_2.avi"] not in (group["s1_1.avi"], group["s2_1.avi"])
    assert group["broken.avi"] not in {g for n, g in group.items() if n != "broken.avi"}  # alone: extraction reports it
    assert (tmp_path / "cache" / scenes.CACHE_NAME).is_file()

    def no_reading(path):
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(scenes, "median_frame", no_reading)
    assert scenes.with_scene_groups([*videos, Video(broken, 1)], tmp_path / "cache") == grouped
    videos[0].path.write_bytes(videos[3].path.read_bytes())  # a changed file is read again
    with pytest.raises(AssertionError, match="s1_1.avi read again"):
        scenes.with_scene_groups(videos, tmp_path / "cache")


def test_scene_folds_keep_scenes_whole_and_classes_balanced():
    videos = []
    for g in range(30):  # scenes of 1 to 6 clips, most of one class, as pushfit's are
        size, label = 1 + g % 6, g % 3 == 0
        videos += [Video(f"g{g}_{i}.avi", int(label if i % 4 else not label), f"scene{g:03d}") for i in range(size)]
    share = sum(v.label for v in videos) / len(videos)
    deals = []
    for seed in (0, 1):
        folds = [make_splits(videos, "scene", fold=f, seed=seed) for f in range(5)]
        tests = [s["test"] for s in folds]
        assert sorted(v.path for t in tests for v in t) == sorted(v.path for v in videos)  # every clip tested once
        for s in folds:
            groups = [{v.group for v in s[k]} for k in ("train", "val", "test")]
            assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])  # no scene in two splits
        for t in tests:
            assert abs(len(t) - len(videos) / 5) <= 3 and abs(sum(v.label for v in t) / len(t) - share) < 0.12
        assert folds[0]["val"] == folds[1]["test"]  # validation: the next fold
        deals.append([sorted(v.path for v in t) for t in tests])
    assert deals[0] != deals[1]  # the seed redraws the deal


def test_scene_folds_need_three_scenes():
    from pipeline.data.videoset import DatasetError

    with pytest.raises(DatasetError, match="at least 3 scenes"):
        make_splits([Video("a.avi", 0, "scene000"), Video("b.avi", 1, "scene001")], "scene")

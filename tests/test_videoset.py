from pathlib import Path

import pytest
from conftest import WEIZMANN, needs_shared

from pipeline.data.videoset import DatasetDefinition, DatasetError, Video, list_videos, make_splits


def videos_of(groups, classes=3, per=1):
    return [Video(Path(f"{g}_{c}_{k}.avi"), c, g) for g in groups for c in range(classes) for k in range(per)]


def test_group_folds_never_share_an_actor_and_cover_everyone():
    vs = videos_of([f"a{i}" for i in range(9)])
    seen_test = []
    for fold in range(9):
        s = make_splits(vs, "group", fold)
        groups = {k: {v.group for v in s[k]} for k in s}
        assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"]) and not (groups["val"] & groups["test"])
        assert len(groups["test"]) == 1 and len(groups["val"]) == 1
        assert sum(len(x) for x in s.values()) == len(vs)
        seen_test += groups["test"]
    assert sorted(seen_test) == [f"a{i}" for i in range(9)]


def test_group_split_needs_groups():
    with pytest.raises(DatasetError, match="group_pattern"):
        make_splits([Video(Path("x.avi"), 0)] * 5, "group")


def test_stratified_split_is_seeded_and_keeps_every_class():
    vs = videos_of(["g"], classes=4, per=10)
    a, b = make_splits(vs, "stratified", seed=3), make_splits(vs, "stratified", seed=3)
    assert a == b and a != make_splits(vs, "stratified", seed=4)
    for part in ("train", "val", "test"):
        assert {v.label for v in a[part]} == {0, 1, 2, 3}
    assert len(a["test"]) == 8 and len(a["val"]) == 4


def test_stratified_folds_test_every_video_once_with_every_class_in_proportion():
    vs = videos_of(["g"], classes=2, per=13)
    tested = []
    for fold in range(5):
        s = make_splits(vs, "stratified", fold, num_folds=5, seed=1)
        assert not {v.path for v in s["test"]} & {v.path for v in s["train"] + s["val"]}
        assert not {v.path for v in s["val"]} & {v.path for v in s["train"]}
        assert sorted(sum(v.label == c for v in s["test"]) for c in (0, 1)) in ([2, 2], [2, 3], [3, 3])
        assert {v.label for v in s["val"]} == {0, 1}
        tested += [v.path for v in s["test"]]
    assert sorted(tested) == sorted(v.path for v in vs)  # each video in exactly one test fold
    with pytest.raises(DatasetError, match="fold 5 of 5"):
        make_splits(vs, "stratified", 5, num_folds=5)
    one = make_splits(vs, "stratified", num_folds=1)  # the older single split
    assert len(one["test"]) == 6


def test_folder_layout_with_group_pattern(tiny_dataset, toy_definition):
    d = DatasetDefinition.load(toy_definition)
    videos, classes = list_videos(d, tiny_dataset)
    assert classes == ["wave", "walk"] and len(videos) == 8
    assert {v.group for v in videos} == {"ann", "bob", "cid", "dan"}
    with pytest.raises(DatasetError, match="does not exist"):
        list_videos(d, tiny_dataset / "nope")


def test_csv_layout_reads_labels_groups_and_splits(tmp_path):
    (tmp_path / "v").mkdir()
    rows = ["path,label,group,split", "v/a.avi,run,p1,train", "v/b.avi,sit,p2,test", "v/c.avi,run,p3,train"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    d = DatasetDefinition.load(tmp_path / "labels.csv")
    videos, classes = list_videos(d, tmp_path)
    assert classes == ["run", "sit"]
    assert [(v.path.name, v.label, v.group, v.split) for v in videos] == [("a.avi", 0, "p1", "train"), ("b.avi", 1, "p2", "test"), ("c.avi", 0, "p3", "train")]


def test_ucf101_and_hmdb51_split_lists(tmp_path):
    ucf = tmp_path / "ucf"
    (ucf / "ucfTrainTestlist").mkdir(parents=True)
    (ucf / "ucfTrainTestlist" / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (ucf / "ucfTrainTestlist" / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g09_c01.avi 2\nArchery/v_Archery_g10_c01.avi 2\n"
    )
    (ucf / "ucfTrainTestlist" / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    d = DatasetDefinition(name="ucf", layout="ucf101", group_pattern=r"_(g\d+)_")
    videos, classes = list_videos(d, ucf)
    assert classes == ["ApplyEyeMakeup", "Archery"]
    assert [(v.label, v.group, v.split) for v in videos] == [(0, "g08", "train"), (1, "g09", "train"), (1, "g10", "train"), (0, "g01", "test")]
    s = make_splits(videos, "official", val_fraction=0.34)
    assert len(s["test"]) == 1 and len(s["val"]) == 1 and not ({v.group for v in s["val"]} & {v.group for v in s["train"]})

    hmdb = tmp_path / "hmdb"
    (hmdb / "testTrainMulti_7030_splits").mkdir(parents=True)
    (hmdb / "testTrainMulti_7030_splits" / "brush_hair_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (hmdb / "testTrainMulti_7030_splits" / "cartwheel_test_split1.txt").write_text("d.avi 1 \ne.avi 2\n")
    videos, classes = list_videos(DatasetDefinition(name="hmdb", layout="hmdb51"), hmdb)
    assert classes == ["brush_hair", "cartwheel"]
    assert [(v.path.name, v.split) for v in videos] == [("a.avi", "train"), ("b.avi", "test"), ("d.avi", "train"), ("e.avi", "test")]


def test_definitions_load_by_name_and_reject_unknown_keys(tmp_path):
    d = DatasetDefinition.load("weizmann")
    assert len(d.classes) == 10 and len(d.download) == 10 and d.group_of(Path("lena_walk1.avi")) == "lena"
    (tmp_path / "bad.yaml").write_text("name: x\nclases: [a]\n")
    with pytest.raises(DatasetError, match="unknown keys"):
        DatasetDefinition.load(tmp_path / "bad.yaml")


@needs_shared
def test_weizmann_leave_one_actor_out_on_the_real_clips():
    videos, classes = list_videos(DatasetDefinition.load("weizmann"), WEIZMANN)
    assert len(videos) == 90 and len(classes) == 10
    s = make_splits(videos, "group", fold=0)
    assert {v.group for v in s["test"]} == {"daria"} and len(s["test"]) == 10 and len(s["train"]) == 70


def test_a_folder_of_class_folders_is_its_own_root(tmp_path):
    (tmp_path / "mine" / "clap").mkdir(parents=True)
    d = DatasetDefinition.load(str(tmp_path / "mine"))
    assert d.name == "mine" and d.default_root() == tmp_path / "mine"


def test_stratified_folds_shrink_to_the_smallest_class_and_say_so(caplog):
    vs = [Video(Path(f"{c}{i}.avi"), c) for c in (0, 1) for i in range(3 if c == 0 else 6)]
    with caplog.at_level("WARNING", logger="lightning.pytorch"):
        folds = [make_splits(vs, "stratified", f, class_names=["jump", "sit"]) for f in range(3)]
    assert "class 'jump' has 3 videos: 3 folds instead of 5" in caplog.text
    tested = [v.path for s in folds for v in s["test"]]
    assert sorted(tested) == sorted(v.path for v in vs)  # 3 folds test every video once
    assert all({v.label for v in s["train"]} == {0, 1} for s in folds)  # each fold learns every class
    assert all({v.label for v in s["val"]} == {0, 1} for s in folds)  # and validates it
    with pytest.raises(DatasetError, match="fold 3 of 3 folds does not exist"):
        make_splits(vs, "stratified", 3)
    with pytest.raises(DatasetError, match=r"class 'jump' has 3 videos: too few for 5 folds; give --data.num_folds 3 or fewer"):
        make_splits(vs, "stratified", num_folds=5, class_names=["jump", "sit"])
    with pytest.raises(DatasetError, match="class 'jump' has 2 videos: at least 3 per class"):
        make_splits(vs[1:], "stratified", class_names=["jump", "sit"])

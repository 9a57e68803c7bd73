"""The teaching app's examples: actions as folders, clips cached at once where train.py looks, deletion."""

from __future__ import annotations

import threading

import pytest
from conftest import TINY_MODEL, write_clip

from pipeline.data.extract import extractor_record
from pipeline.data.features import ExtractorConfig, FeatureExtractor
from pipeline.data.videoset import DatasetDefinition
from pipeline.teach.examples import ExampleError, Examples


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(ExtractorConfig(weights=TINY_MODEL, imgsz=64, fps=None))


def test_actions_clips_and_their_cache_entries(tmp_path, extractor):
    ex = Examples(tmp_path / "mine", extractor, threading.Lock(), tmp_path / "cache")
    ex.add_action("wave")
    ex.add_action("walk")
    assert ex.actions() == ["walk", "wave"]
    for bad in ("", "../etc", "a b", ".hidden", "x" * 41):
        with pytest.raises(ExampleError, match="action name"):
            ex.add_action(bad)
    assert "two actions" not in (ex.training_problem() or "") and "at least 3 clips" in ex.training_problem()
    paths = []
    for action in ("wave", "walk"):
        for i in range(3):
            path = ex.new_clip(action)
            assert path.parent == tmp_path / "mine" / action and path.suffix == ".mp4"
            write_clip(path.with_suffix(".avi"), frames=10, seed=i).rename(path)  # the recorder's rename, in short
            ex.cache_later(path)
            paths.append(path)
    assert ex.wait(timeout=120)
    assert ex.training_problem() is None
    # the entry is the one train.py's data module would read: same folder, same key, same name
    cache_dir = tmp_path / "cache" / ExtractorConfig(weights=TINY_MODEL, imgsz=64, fps=None).key(extractor.identity)
    for p in paths:
        entry = ex.cache.entry(p, ex.root)
        assert entry.parent == cache_dir and entry.is_file()
    state = ex.state()
    assert [a["name"] for a in state] == ["walk", "wave"] and all(c["cached"] for a in state for c in a["clips"])
    assert all(c["seconds"] > 0 for a in state for c in a["clips"])
    # deleting a clip takes its features along
    gone = paths[0]
    entry = ex.cache.entry(gone, ex.root)
    ex.delete_clip("wave", gone.name)
    assert not gone.exists() and not entry.exists()
    assert len(ex.clips("wave")) == 2 and "wave (2)" in ex.training_problem()
    with pytest.raises(ExampleError, match="no clip"):
        ex.delete_clip("wave", "../walk/" + paths[3].name)
    with pytest.raises(ExampleError, match="still has clips"):
        ex.remove_action("wave")
    ex.add_action("jump")
    ex.remove_action("jump")
    assert ex.actions() == ["walk", "wave"]
    ex.close()
    assert extractor_record(extractor)["feature_dim"] == extractor.feature_dim
    assert DatasetDefinition.load(tmp_path / "mine").name == "mine"  # an ordinary folder dataset


def test_clips_copied_in_or_left_from_before_are_cached_on_start_and_a_broken_one_is_named(tmp_path, extractor):
    write_clip(tmp_path / "mine" / "wave" / "old.avi", frames=8)
    (tmp_path / "mine" / "walk").mkdir(parents=True)
    (tmp_path / "mine" / "walk" / "broken.mp4").write_bytes(b"not a video")
    ex = Examples(tmp_path / "mine", extractor, threading.Lock(), tmp_path / "cache")
    assert ex.wait(timeout=120)
    assert ex.clips("wave")[0].cached
    assert not ex.clips("walk")[0].cached
    assert "broken.mp4 cannot be read" in ex.training_problem() and "delete it" in ex.training_problem()
    assert str(tmp_path / "mine" / "walk" / "broken.mp4") in ex.failed
    ex.close()


def test_a_clip_deleted_before_its_features_are_extracted_is_no_failure(tmp_path, extractor):
    ex = Examples(tmp_path / "mine", extractor, threading.Lock(), tmp_path / "cache")
    guard = threading.Lock()
    ex.guard = guard
    with guard:  # the worker waits at its first forward
        path = write_clip(ex.new_clip("wave").with_suffix(".avi"), frames=10)
        ex.cache_later(path)
        path.unlink()
    assert ex.wait(timeout=60)
    assert not ex.failed and not list(ex.cache.dir.glob("*.npz"))
    ex.close()

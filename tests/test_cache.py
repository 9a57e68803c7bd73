import os
import time
from dataclasses import replace

import numpy as np

from pipeline.data.cache import FeatureCache, Sequence


def seq(t=5, d=3):
    return Sequence(np.arange(t * d, dtype=np.float32).reshape(t, d), np.arange(t), np.ones(t, np.int64), np.arange(t) * 2, 12.5, 25.0)


def test_save_load_round_trip(tmp_path):
    video = tmp_path / "data" / "walk" / "ann_walk.avi"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"x" * 100)
    cache = FeatureCache(tmp_path / "cache", "key1", {"imgsz": 64})
    entry = cache.entry(video, tmp_path / "data")
    assert entry.name.startswith("walk__ann_walk.") and not entry.is_file()
    cache.save(entry, replace(seq(), frame_size=(640, 360)))
    got = FeatureCache.load(entry)
    assert cache.entry(video, tmp_path / "data").is_file()
    np.testing.assert_array_equal(got.features, seq().features)
    np.testing.assert_array_equal(got.frame, seq().frame)
    np.testing.assert_array_equal(got.track, seq().track)
    assert got.frame_index.tolist() == [0, 2, 4, 6, 8] and got.fps == 12.5 and got.source_fps == 25.0
    assert got.frame_size == (640, 360) and got.aspect == 640 / 360
    assert (cache.dir / "extractor.json").is_file()


def test_an_edited_video_gets_a_new_entry(tmp_path):
    video = tmp_path / "a.avi"
    video.write_bytes(b"x" * 100)
    cache = FeatureCache(tmp_path / "cache", "k")
    before = cache.entry(video)
    video.write_bytes(b"y" * 101)
    assert cache.entry(video) != before


def test_a_copied_video_keeps_its_entry_and_an_edit_of_the_same_size_does_not(tmp_path):
    video = tmp_path / "a.avi"
    video.write_bytes(bytes(range(256)) * 1024)
    cache = FeatureCache(tmp_path / "cache", "k")
    before = cache.entry(video)
    os.utime(video, (1, 1))  # what a copy or a re-sync does to the file's times
    assert cache.entry(video) == before
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 1  # one byte in the middle
    video.write_bytes(bytes(data))
    assert cache.entry(video) != before


def test_half_written_entries_are_never_valid_and_stale_ones_are_swept(tmp_path):
    video = tmp_path / "a.avi"
    video.write_bytes(b"x")
    cache = FeatureCache(tmp_path / "cache", "k")
    entry = cache.entry(video)
    tmp = entry.with_name(f".{entry.name}.999.tmp")
    tmp.write_bytes(b"partial")  # what a kill -9 in the middle of a write leaves
    assert not cache.entry(video).is_file()
    old = time.time() - 7200
    os.utime(tmp, (old, old))
    FeatureCache(tmp_path / "cache", "k")
    assert not tmp.exists()

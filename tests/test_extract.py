"""Extraction into the cache: bad files are skipped and listed, and a killed run resumes to the same cache."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset, run_script, seeing_weights, write_clip

from pipeline.data.cache import FeatureCache
from pipeline.data.extract import extract_features, extract_video
from pipeline.data.features import ExtractorConfig, FeatureExtractor

TRAINER = {"accelerator": "cpu", "devices": 1}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return str(seeing_weights(tmp_path_factory.mktemp("w") / "tiny-person.pt"))


@pytest.fixture(scope="module")
def extractor(weights) -> FeatureExtractor:
    return FeatureExtractor(ExtractorConfig(weights=weights, imgsz=64, layers=(16,)))


def _bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    # named like the good clips (actor_class), so group splits keep them and extraction must skip them
    corrupt = folder / "ann_corrupt.avi"
    corrupt.write_bytes(os.urandom(4096))
    empty = folder / "bob_empty.avi"
    empty.write_bytes(b"")
    text = folder / "cid_notes.mp4"
    text.write_text("this is not a video\n")
    dangling = folder / "dan_gone.avi"
    dangling.symlink_to(folder / "does-not-exist.avi")  # a path that cannot be read
    return {"corrupt": corrupt, "empty": empty, "non-video": text, "unreadable": dangling}


def test_bad_files_are_skipped_and_listed_the_rest_extracted(tmp_path, extractor):
    good = [write_clip(tmp_path / "v" / f"good{i}.avi", frames=8, seed=i) for i in range(2)]
    bad = _bad_files(tmp_path / "v")
    cache = FeatureCache(tmp_path / "cache", "k")
    failed = extract_features([*good, *bad.values()], cache, extractor.config, tmp_path / "v", 8, TRAINER, extractor)
    assert sorted(Path(p).name for p, _ in failed) == sorted(p.name for p in bad.values())
    reasons = {Path(p).name: why for p, why in failed}
    assert "empty" in reasons["bob_empty.avi"]
    assert all(why and "\n" not in why for why in reasons.values())
    for g in good:
        seq = cache.load(cache.entry(g, tmp_path / "v"))
        assert seq.features.shape == (8, extractor.feature_dim) and seq.subject().shape == (8, extractor.feature_dim)
    # a second run extracts nothing new: the good videos are cached, the bad ones fail again
    again = extract_features([*good, *bad.values()], cache, extractor.config, tmp_path / "v", 8, TRAINER, extractor)
    assert len(again) == len(bad)


def test_extract_video_matches_cache_and_respects_fps(tmp_path, extractor, weights):
    clip = write_clip(tmp_path / "c.avi", frames=20, fps=25)
    seq = extract_video(extractor, clip, batch_size=7)  # batches that do not divide the length
    assert seq.features.shape == (20, extractor.feature_dim) and seq.track_ids() == [1]
    assert seq.frame_size == (80, 64) and seq.aspect == 80 / 64  # what the box and keypoints are relative to
    np.testing.assert_array_equal(seq.frame_index, np.arange(20))
    np.testing.assert_array_equal(seq.frame, np.arange(20))
    sub = extract_video(FeatureExtractor(ExtractorConfig(weights=weights, imgsz=64, layers=(16,), fps=12.5)), clip)
    np.testing.assert_array_equal(sub.frame_index, np.arange(0, 20, 2))
    np.testing.assert_allclose(sub.subject(), seq.subject()[::2], atol=1e-5)


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from pipeline.data.cache import FeatureCache
    from pipeline.data.extract import extract_features
    from pipeline.data.features import ExtractorConfig

    root, cache_dir, kill_after, weights = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    saves = 0
    real_save = FeatureCache.save

    def save(self, path, seq):
        global saves
        saves += 1
        if saves > kill_after:  # die in the middle of writing: a half-written temporary file stays behind
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(b"PK\\x03\\x04 half an entry")
            os.kill(os.getpid(), signal.SIGKILL)
        real_save(self, path, seq)

    FeatureCache.save = save
    cfg = ExtractorConfig(weights=weights, imgsz=64, layers=(16,))
    videos = sorted(root.rglob("*.avi"))
    failed = extract_features(videos, FeatureCache(cache_dir, "k"), cfg, root, 8, {"accelerator": "cpu", "devices": 1})
    print("FAILED", len(failed))
    """
)


def test_killed_extraction_resumes_to_the_same_cache(tmp_path, weights):
    root = make_dataset(tmp_path / "data", actors=("ann", "bob", "cid"), frames=8)
    script = tmp_path / "extract.py"
    script.write_text(KILLER)
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    killed = run_script(str(script), str(root), str(tmp_path / "resumed"), "2", weights, env=env)
    assert killed.returncode == -9, killed.stderr[-2000:]
    cache_dir = tmp_path / "resumed" / "k"
    assert len(list(cache_dir.glob("*.npz"))) == 2
    assert len(list(cache_dir.glob(".*.tmp"))) == 1  # never read as an entry

    resumed = run_script(str(script), str(root), str(tmp_path / "resumed"), "1000", weights, env=env)
    assert resumed.returncode == 0 and "FAILED 0" in resumed.stdout, resumed.stderr[-2000:]
    assert "extracting features of 4 videos" in resumed.stderr  # 6 videos, 2 already done

    clean = run_script(str(script), str(root), str(tmp_path / "clean"), "1000", weights, env=env)
    assert clean.returncode == 0, clean.stderr[-2000:]
    a = sorted(p.name for p in cache_dir.glob("*.npz"))
    b = sorted(p.name for p in (tmp_path / "clean" / "k").glob("*.npz"))
    assert a == b and len(a) == 6
    for name in a:
        x, y = FeatureCache.load(cache_dir / name), FeatureCache.load(tmp_path / "clean" / "k" / name)
        assert len(x.features) > 0
        for k in ("features", "frame", "track", "frame_index"):
            np.testing.assert_array_equal(getattr(x, k), getattr(y, k))


def test_unreadable_cache_entries_are_extracted_again(tmp_path, extractor):
    clips = [write_clip(tmp_path / "v" / f"c{i}.avi", frames=8, seed=i) for i in range(4)]
    from pipeline.data.extract import extractor_record

    cache = FeatureCache(tmp_path / "cache", "k", extractor_record(extractor))
    assert extract_features(clips, cache, extractor.config, tmp_path / "v", 8, TRAINER, extractor) == []
    entries = [cache.entry(c, tmp_path / "v") for c in clips]
    good = FeatureCache.load(entries[3])
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # truncated
    entries[1].write_bytes(b"")  # empty
    wrong = FeatureCache.load(entries[2])  # another feature size (an older extractor's)
    cache.save(entries[2], type(wrong)(wrong.features[:, :5], wrong.frame, wrong.track, wrong.frame_index, wrong.fps, wrong.source_fps))
    with pytest.warns(UserWarning, match="3 unreadable cache entries"):
        assert extract_features(clips, cache, extractor.config, tmp_path / "v", 8, TRAINER, extractor) == []
    for e in entries:
        assert cache.readable(e) and FeatureCache.load(e).features.shape[1] == good.features.shape[1]
    np.testing.assert_allclose(FeatureCache.load(entries[2]).features, wrong.features, atol=1e-5)  # the same features again


def test_uncompressed_avi_is_extracted_and_a_cut_one_is_flagged(tmp_path, extractor):
    from conftest import write_raw_avi

    seq = extract_video(extractor, write_raw_avi(tmp_path / "raw.avi", frames=12))
    assert len(seq.frame_index) == 12 and seq.declared_frames == 12 and not seq.truncated
    long = write_clip(tmp_path / "long.avi", frames=60)
    data = long.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 4 // 10])
    cut = extract_video(extractor, tmp_path / "cut.avi")
    assert cut.declared_frames == 60 and cut.frames_read < 54 and cut.truncated

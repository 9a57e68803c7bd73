import threading
import time

import cv2
import numpy as np
import pytest
from conftest import write_clip

from pipeline.data.video import FrameSampler, VideoError, VideoReader, expand_sources, open_capture, prefetch


def test_reads_every_frame_as_uint8_bgr(tmp_path):
    clip = write_clip(tmp_path / "a.avi", frames=12, size=(80, 64))
    reader = VideoReader(clip)
    frames = list(reader)
    assert [i for i, _ in frames] == list(range(12))
    assert frames[0][1].dtype == np.uint8 and frames[0][1].shape == (64, 80, 3)
    assert reader.info.fps == 25 and reader.info.frame_count == 12


def test_subsamples_to_target_fps_and_caps_frames(tmp_path):
    clip = write_clip(tmp_path / "a.avi", frames=30, fps=30)
    idx = [i for i, _ in VideoReader(clip, fps=10)]
    assert idx == list(range(0, 30, 3))
    assert [i for i, _ in VideoReader(clip, fps=10, max_frames=4)] == [0, 3, 6, 9]
    # a target above the source rate keeps every frame and reports the source rate
    r = VideoReader(clip, fps=60)
    assert len(list(r)) == 30 and r.fps == 30


def test_sampler_keeps_the_target_rate_for_uneven_ratios():
    s = FrameSampler(30, 25)
    kept = [i for i in range(300) if s.keep(i)]
    assert len(kept) == 250  # 10 s at 25 fps
    assert max(np.diff(kept)) == 2


def test_batches_carry_source_indices(tmp_path):
    clip = write_clip(tmp_path / "a.avi", frames=10)
    chunks = list(VideoReader(clip).batches(4))
    assert [len(i) for i, _, _ in chunks] == [4, 4, 2]
    assert chunks[1][0].tolist() == [4, 5, 6, 7] and chunks[1][1].shape[0] == 4
    assert all(k.all() for _, _, k in chunks)


def test_every_frame_batches_mark_the_sampled_ones(tmp_path):
    clip = write_clip(tmp_path / "a.avi", frames=10, fps=25)
    chunks = list(VideoReader(clip, fps=12.5).batches(4, every_frame=True))
    idx = np.concatenate([i for i, _, _ in chunks])
    keep = np.concatenate([k for _, _, k in chunks])
    assert idx.tolist() == list(range(10))  # every frame decoded, for an annotated copy
    assert idx[keep].tolist() == [0, 2, 4, 6, 8]  # the model sees the trained rate
    sampled = np.concatenate([f for _, f, _ in VideoReader(clip, fps=12.5).batches(4)])
    np.testing.assert_array_equal(np.concatenate([f for _, f, _ in chunks])[keep], sampled)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.avi", "no such file"),
        (lambda p: (p / "empty.avi").write_bytes(b"") or p / "empty.avi", "empty file"),
        (lambda p: (p / "notes.avi").write_text("not a video at all\n" * 50) or p / "notes.avi", "cannot open"),
        (lambda p: p, "is a folder"),
    ],
)
def test_bad_sources_raise_a_clear_error_naming_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(VideoError, match=message) as e:
        list(VideoReader(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_truncated_video_is_an_error_when_no_frame_decodes(tmp_path):
    clip = write_clip(tmp_path / "a.avi", frames=10)
    data = clip.read_bytes()
    bad = tmp_path / "cut.avi"
    bad.write_bytes(data[:200])  # header only
    with pytest.raises(VideoError, match="cut.avi"):
        list(VideoReader(bad))


def test_prefetch_yields_in_order_and_reraises_producer_errors():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise VideoError("decoder died")

    it = prefetch(broken())
    assert next(it) == 1
    with pytest.raises(VideoError, match="decoder died"):
        next(it)


def test_prefetch_stops_its_thread_when_the_consumer_stops():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = prefetch(endless(), depth=2)
    assert next(it) == 0
    it.close()
    time.sleep(0.3)
    n = len(produced)
    time.sleep(0.3)
    assert len(produced) == n  # nothing more is decoded
    assert not any(t.name == "decode" and t.is_alive() for t in threading.enumerate())


def test_sniff_tells_images_and_uncompressed_avi_from_videos(tmp_path):
    from conftest import write_raw_avi

    from pipeline.data.video import sniff

    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert sniff(tmp_path / "a.jpg") == "JPEG" and sniff(tmp_path / "a.png") == "PNG"
    assert sniff(write_raw_avi(tmp_path / "raw.avi")) == "raw-avi"
    assert sniff(write_clip(tmp_path / "mjpg.avi", frames=3)) is None


def test_uncompressed_avi_decodes_every_frame_and_rewinds(tmp_path):
    from conftest import write_raw_avi

    path = write_raw_avi(tmp_path / "raw.avi", frames=6, size=(40, 30))
    reader = VideoReader(str(path))
    assert (reader.info.frame_count, reader.info.width, reader.info.height, reader.info.fps) == (6, 40, 30, 25.0)
    frames = [f for _, f in reader]
    assert [int(f[0, 0, 0]) for f in frames] == [0, 10, 20, 30, 40, 50] and frames[0].shape == (30, 40, 3)
    cap = open_capture(str(path))
    while cap.read()[0]:
        pass
    assert cap.set(cv2.CAP_PROP_POS_FRAMES, 0) and int(cap.read()[1][0, 0, 0]) == 0  # --realtime --loop


def test_a_source_folder_leaves_out_the_annotated_videos_of_its_output_folder(tmp_path):
    # `infer.py clips/ -o clips/out` run twice must not label its own annotated videos the second time
    write_clip(tmp_path / "clips" / "a.avi", frames=2)
    write_clip(tmp_path / "clips" / "out" / "a.avi", frames=2)  # an earlier run's output
    folder, glob_ = str(tmp_path / "clips"), str(tmp_path / "clips" / "**" / "*.avi")
    assert expand_sources([folder]) == [str(tmp_path / "clips" / "a.avi"), str(tmp_path / "clips" / "out" / "a.avi")]
    assert expand_sources([folder], tmp_path / "clips" / "out") == [str(tmp_path / "clips" / "a.avi")]
    assert expand_sources([glob_], tmp_path / "clips" / "out") == [str(tmp_path / "clips" / "a.avi")]
    named = str(tmp_path / "clips" / "out" / "a.avi")  # a file named on purpose is taken as it is
    assert expand_sources([named], tmp_path / "clips" / "out") == [named]
    with pytest.raises(VideoError, match="only videos are under the output folder"):
        expand_sources([str(tmp_path / "clips" / "out")], tmp_path / "clips" / "out")

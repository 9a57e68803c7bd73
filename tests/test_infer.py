"""``infer.py`` on video files: outputs, their schema, frame-rate mapping, and one-line errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import graphs_from, make_checkpoint, run_infer, write_clip
from test_download import server  # noqa: F401  (fixture)

from pipeline.data.extract import extract_video
from pipeline.data.features import POSE_DIM
from pipeline.inference.predictor import ActionPredictor
from pipeline.model.novelty import MotionRule, Novelty

FRAME_KEYS = {"frame": int, "time_s": float, "tracks": list}
PERSON_KEYS = {"id": int, "box": list, "label": str, "score": float, "top": list}
TRACK_KEYS = {"id": int, "first_s": float, "last_s": float, "label": str, "score": float, "share": float, "frames": int, "probs": dict, "segments": list}
TOP_KEYS = {
    "schema_version": int, "source": str, "checkpoint": str, "classes": list, "fps": float, "source_fps": float,
    "smoothing": dict, "tracker": dict, "max_people": int, "frames": list, "frame_count": int, "declared_frames": int, "truncated": bool, "processed_frames": int,
    "duration_s": float, "main_track": int, "label": str, "score": float, "video": dict, "segments": list, "tracks": list,
    "processing_fps": float,
}  # fmt: skip


def infer(*args: str) -> tuple[int, str, str]:
    return run_infer(*args, "--quiet")


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_tracks_label_leaves_out_its_warm_up():
    from pipeline.inference.files import Smoothing, _TrackLog

    names = ["a", "b"]
    log = _TrackLog(names, Smoothing(warmup_frames=8), 0.0, False)
    for i in range(12):  # 0.48 s at 25 fps: shorter than a label must hold, so the mean decides
        log.add(i / 25, np.array([0.9, 0.1]) if i < 8 else np.array([0.3, 0.7]), 0.0, 1.0, None)
    r = log.result(1, names, 1 / 25)
    assert r.label == "b" and r.probs == {"a": 0.3, "b": 0.7} and r.frames == 12
    assert r.segments[0].start_s == 0.0 and abs(r.segments[-1].end_s - 12 / 25) < 1e-9  # the track's whole time
    log.smoothing = Smoothing(warmup_frames=0)  # with every frame, the first eight outvote the rest
    assert log.result(1, names, 1 / 25).label == "a"
    short = _TrackLog(names, Smoothing(warmup_frames=8), 0.0, False)
    for i in range(5):  # no longer than the warm-up: its last frame speaks
        short.add(i / 25, np.array([0.9, 0.1]) if i < 4 else np.array([0.2, 0.8]), 0.0, 1.0, None)
    assert short.result(2, names, 1 / 25).label == "b"


def test_another_person_does_not_stand_in_for_the_subjects_warm_up():
    # the subject is seen for 9 frames (so the video reads its 9th alone); a passer-by for the 6th to 8th: the
    # video's label is the subject's, not the passer-by's, whose frames fell in the subject's warm-up
    from pipeline.inference.files import Smoothing, _TrackLog, _video_timeline

    names, sm = ["a", "b"], Smoothing(warmup_frames=8)
    subject, passer = _TrackLog(names, sm, 0.0, False), _TrackLog(names, sm, 5 / 25, False)
    for i in range(9):
        subject.add(i / 25, np.array([0.2, 0.8]), 0.0, 1.0, None)
        if 5 <= i < 8:
            passer.add(i / 25, np.array([0.9, 0.1]), 0.0, 1.0, None)
    label, _, probs, segments, _ = _video_timeline({1: subject, 2: passer}, names, sm, 1 / 25)
    assert label == "b" and probs == {"a": 0.2, "b": 0.8}
    assert segments[0].start_s == 0.0 and abs(segments[-1].end_s - 9 / 25) < 1e-9


def test_a_stop_while_an_output_is_being_opened_leaves_no_partial_file(tmp_path, tiny_checkpoint, monkeypatch):
    # a SIGTERM to a worker (or Ctrl-C) that lands after the CSV's file is made but before the video keeps its
    # sink: nothing is left under a partial name (tests/test_workers.py's SIGTERM test hit this window once)
    from pipeline.inference import files

    made = files.CsvTimeline.__init__

    def stopped(self, *args):
        made(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(files.CsvTimeline, "__init__", stopped)
    out = tmp_path / "o"
    paths = files.OutputPaths(json=out / "c.json", csv=out / "c.csv")
    with pytest.raises(KeyboardInterrupt):
        files.analyse_video(str(write_clip(tmp_path / "c.avi", frames=10)), ActionPredictor(tiny_checkpoint, device="cpu"), paths, progress=False)
    assert out.is_dir() and not list(out.iterdir())


@pytest.fixture(scope="module")
def ckpt25(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "fps25.ckpt", fps=25.0)


def test_outputs_schema_and_frame_rate_mapping(tmp_path, ckpt25):
    clip = write_clip(tmp_path / "in" / "clip50.avi", frames=40, fps=50.0)  # the model was trained at 25 fps
    code, out, err = infer(str(clip), "-c", str(ckpt25), "--output", str(tmp_path / "out"), "--min-segment", "0.1")
    assert code == 0, err
    assert "clip50.avi:" in out

    doc = json.loads((tmp_path / "out" / "clip50.json").read_text())
    assert set(doc) == set(TOP_KEYS)
    for k, t in TOP_KEYS.items():
        assert isinstance(doc[k], t), k
    assert doc["classes"] == ["walk", "wave"] and doc["fps"] == 25.0 and doc["source_fps"] == 50.0
    assert doc["schema_version"] == 5 and doc["frame_count"] == 40 and doc["processed_frames"] == 20 == len(doc["frames"])
    for f in doc["frames"]:
        assert set(f) == set(FRAME_KEYS) and all(isinstance(f[k], t) for k, t in FRAME_KEYS.items())
        assert len(f["tracks"]) == 1  # the test model sees one person
        for p in f["tracks"]:
            assert set(p) == set(PERSON_KEYS) and all(isinstance(p[k], t) for k, t in PERSON_KEYS.items())
            assert len(p["top"]) == 2 and p["label"] in (*doc["classes"], "warming up") and len(p["box"]) == 4
    assert [t["id"] for t in doc["tracks"]] == [doc["main_track"]]
    for t in doc["tracks"]:
        assert set(t) == set(TRACK_KEYS) and all(isinstance(t[k], ty) for k, ty in TRACK_KEYS.items())
    assert doc["label"] == doc["video"]["label"] == doc["tracks"][0]["label"]
    # sampled as in training (every other frame), timestamps in source time
    assert [f["frame"] for f in doc["frames"]] == list(range(0, 40, 2))
    assert all(abs(f["time_s"] - f["frame"] / 50.0) < 1e-6 for f in doc["frames"])
    # the video's probabilities are the mean of the per-frame ones (the CSV has them all) after the track's
    # first 8, as train.py test scores a video (the checkpoint's warmup_frames: training left them out of the loss)
    with open(tmp_path / "out" / "clip50.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and {r["track"] for r in rows} == {str(doc["main_track"])}
    probs = np.array([[float(r["walk"]), float(r["wave"])] for r in rows])
    assert doc["smoothing"]["warmup_frames"] == 8
    assert np.allclose([doc["video"]["probs"][n] for n in ("walk", "wave")], probs[8:].mean(0), atol=1e-3)
    assert np.allclose([doc["tracks"][0]["probs"][n] for n in ("walk", "wave")], probs[8:].mean(0), atol=1e-3)
    assert not np.allclose(probs[8:].mean(0), probs.mean(0), atol=1e-3)  # so the warm-up was left out
    # segments: contiguous over the whole video; the video label is the one covering the most time
    segs = doc["segments"]
    assert segs[0]["start_s"] == 0 and abs(segs[-1]["end_s"] - 40 / 50) < 1e-6
    assert all(a["end_s"] == b["start_s"] for a, b in zip(segs, segs[1:]))
    cover = {n: sum(s["end_s"] - s["start_s"] for s in segs if s["label"] == n) for n in doc["classes"]}
    assert doc["video"]["label"] == max(cover, key=cover.get)
    assert abs(doc["video"]["share"] - cover[doc["video"]["label"]] / 0.8) < 1e-3

    # the annotated video: same frame count and fps as the source, enlarged (80x64 is too small for text),
    # and actually drawn on
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip50.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 40 and cap.get(cv2.CAP_PROP_FPS) == 50.0
    ok, annotated = cap.read()
    src = cv2.VideoCapture(str(clip))
    _, original = src.read()
    assert annotated.shape == (64 * 6, 80 * 6, 3)
    import av  # H.264, which browsers play (MPEG-4 Part 2 they do not), and the printed line says so

    with av.open(str(tmp_path / "out" / "clip50.mp4")) as box:
        assert box.streams.video[0].codec_context.name == "h264"
    assert "clip50.mp4 (H.264)" in out
    original = cv2.resize(original, (80 * 6, 64 * 6))
    assert ok and np.abs(annotated.astype(int) - original.astype(int)).mean() > 1.0
    assert (tmp_path / "out" / "clip50.png").stat().st_size > 5000


def test_the_annotated_video_shows_a_persons_warm_up_as_no_label_yet(tmp_path, tiny_checkpoint, monkeypatch):
    """The frames a track's label leaves out (the checkpoint's warm-up, 8) are drawn as ``warming up``, without
    bars, as the timeline plot greys them; from the ninth the person's action and its bars."""
    from pipeline.inference import files

    drawn, real = [], files.draw
    monkeypatch.setattr(files, "draw", lambda frame, o, *a: (drawn.append(o), real(frame, o, *a))[1])
    clip = str(write_clip(tmp_path / "a.avi", frames=16))
    code, _, err = infer(clip, "-c", str(tiny_checkpoint), "--save-video", str(tmp_path / "a.mp4"), "--json", str(tmp_path / "a.json"), "--csv", str(tmp_path / "a.csv"))
    assert code == 0, err
    assert len(drawn) == 16 and all(len(o.people) == 1 for o in drawn)  # the test model sees one person in every frame
    assert [o.label for o in drawn[:8]] == [o.people[0].label for o in drawn[:8]] == ["warming up"] * 8 and not any(o.top for o in drawn[:8])
    assert all(o.label in ("walk", "wave") and o.people[0].label == o.label and len(o.top) == 2 for o in drawn[8:])
    # the JSON and CSV say per frame what the picture shows; the probabilities stay the model's
    frames = [f["tracks"][0] for f in json.loads((tmp_path / "a.json").read_text())["frames"]]
    rows = list(csv.DictReader((tmp_path / "a.csv").open()))
    assert [f["label"] for f in frames] == [r["label"] for r in rows] == [o.people[0].label for o in drawn]
    assert all(f["score"] == 0 and f["top"][0][1] > 0 for f in frames[:8])


def test_single_outputs_and_summary_only_json(tmp_path, tiny_checkpoint):
    clip = write_clip(tmp_path / "a.avi", frames=12)
    code, _, err = infer(str(clip), "-c", str(tiny_checkpoint), "--json", str(tmp_path / "r" / "a.json"), "--no-frames")
    assert code == 0, err
    doc = json.loads((tmp_path / "r" / "a.json").read_text())
    assert doc["frames"] == [] and doc["processed_frames"] == 12 and doc["segments"]
    assert not (tmp_path / "r" / "a.mp4").exists()


def test_folder_with_a_bad_file_processes_the_rest(tmp_path, tiny_checkpoint):
    for i in range(2):
        write_clip(tmp_path / "in" / f"good{i}.avi", frames=10, seed=i)
    (tmp_path / "in" / "broken.avi").write_bytes(os.urandom(2048))
    code, out, err = infer(str(tmp_path / "in"), "-c", str(tiny_checkpoint), "--output", str(tmp_path / "out"))
    assert code == 0, err
    assert "good0.avi:" in out and "good1.avi:" in out
    assert "failed: 1 of 3 videos" in err and "broken.avi" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == ["good0.json", "good1.json"]


def _zero_frame_video(path: Path) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    w.release()
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.avi", "no such file"),
        (lambda p: (p / "corrupt.avi").write_bytes(os.urandom(4096)) and p / "corrupt.avi", "corrupt.avi"),
        (lambda p: _zero_frame_video(p / "zero.avi"), "zero.avi"),
        (lambda p: (p / "notes.mp4").write_text("not a video\n" * 20) and p / "notes.mp4", "notes.mp4"),
        (lambda p: "http://127.0.0.1:9/stream.mp4", "127.0.0.1:9"),
    ],
    ids=["missing", "corrupt", "zero-frames", "non-video", "unreadable-url"],
)
def test_bad_source_is_a_one_line_error(tmp_path, tiny_checkpoint, make, message):
    code, _, err = infer(str(make(tmp_path)), "-c", str(tiny_checkpoint), "--json", str(tmp_path / "o.json"))
    assert message in one_line_error(code, err)
    assert not (tmp_path / "o.json").exists()  # no half-written output left behind


def test_output_that_cannot_be_written(tmp_path, tiny_checkpoint):
    clip = write_clip(tmp_path / "a.avi", frames=5)
    (tmp_path / "file").write_text("x")
    code, _, err = infer(str(clip), "-c", str(tiny_checkpoint), "--json", str(tmp_path / "file" / "out.json"))
    assert "cannot write" in one_line_error(code, err)
    code, _, err = infer(str(clip), "-c", str(tiny_checkpoint), "--save-video", str(tmp_path / "out.xyz"))
    assert "cannot write video" in one_line_error(code, err)


def test_wrong_checkpoint_and_misused_options(tmp_path, tiny_checkpoint):
    clip = write_clip(tmp_path / "a.avi", frames=5)
    code, _, err = infer(str(clip), "-c", str(tmp_path / "none.ckpt"))
    assert "not found" in one_line_error(code, err)
    code, _, err = infer(str(clip), str(clip), "-c", str(tiny_checkpoint), "--json", str(tmp_path / "x.json"))
    assert "--output DIR" in one_line_error(code, err)


def test_http_url_source(tmp_path, tiny_checkpoint, server):  # noqa: F811
    base, www = server
    write_clip(www / "remote.avi", frames=12)
    code, out, err = infer(f"{base}/remote.avi", "-c", str(tiny_checkpoint), "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["source"].startswith("http://") and doc["processed_frames"] == 12


def test_the_checkpoints_rejection_threshold_labels_what_the_model_does_not_know(tmp_path):
    # a model whose scores all fall under the threshold it was calibrated with: every frame is "unknown"
    ckpt = make_checkpoint(tmp_path / "reject.ckpt", rejection={"threshold": 0.99, "quantile": 0.05})
    clip = write_clip(tmp_path / "odd.avi", frames=30)
    code, out, err = infer(str(clip), "-c", str(ckpt), "--json", str(tmp_path / "o.json"), "--csv", str(tmp_path / "o.csv"))
    assert code == 0, err
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["smoothing"]["threshold"] == 0.99
    assert doc["label"] == doc["video"]["label"] == "unknown" and "odd.avi: unknown" in out
    assert {s["label"] for s in doc["segments"]} == {"unknown"}
    assert {p["label"] for f in doc["frames"][8:] for p in f["tracks"]} == {"unknown"}  # after the warm-up
    assert {row.split(",")[3] for row in (tmp_path / "o.csv").read_text().splitlines()[9:]} == {"unknown"}
    # --threshold still overrides it
    code, out, err = infer(str(clip), "-c", str(ckpt), "--json", str(tmp_path / "p.json"), "--threshold", "0")
    assert code == 0, err
    assert json.loads((tmp_path / "p.json").read_text())["label"] in ("walk", "wave")


def test_motion_unlike_every_training_video_is_unknown(tmp_path):
    # the random test extractor gives one steady pose on any clip; the model's training people all swung
    # their arms (their keypoints moved), so the steady person in this clip moves unlike any of them
    plain = make_checkpoint(tmp_path / "plain.ckpt", class_names=("swing", "sway"))
    clip = write_clip(tmp_path / "steady.avi", frames=30)
    steady = torch.from_numpy(extract_video(ActionPredictor(plain, device="cpu").extractor, clip).subject())
    swinging = [steady.clone() for _ in range(3)]
    for k, x in enumerate(swinging):  # three people: keypoints x swing by 0.1 of the box, each at their own pace
        x[:, -POSE_DIM:][:, 6:40:2] += 0.1 * torch.sin(torch.arange(len(x))[:, None] * (0.5 + 0.1 * k))
    rules = {name: Novelty(motion=MotionRule.fit(tracks, ["ann", "bob", "cid"], [], 16, 0.05, 8)) for name, tracks in (("swing", swinging), ("steady", [steady] * 3))}
    ckpt = make_checkpoint(tmp_path / "novel.ckpt", class_names=("swing", "sway"), novelty=rules["swing"])
    code, out, err = infer(str(clip), "-c", str(ckpt), "--json", str(tmp_path / "o.json"), "--csv", str(tmp_path / "o.csv"))
    assert code == 0, err
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["label"] == doc["video"]["label"] == "unknown" and "steady.avi: unknown" in out
    assert doc["smoothing"]["rules"] == {"motion": rules["swing"].motion.summary()}
    assert {s["label"] for s in doc["segments"]} == {"unknown"}
    labels = [f["tracks"][0]["label"] for f in doc["frames"]]
    assert set(labels[8:]) == {"unknown"} and "unknown" not in labels[:7]  # judged from the 8th frame of the track on
    assert [row.split(",")[3] for row in (tmp_path / "o.csv").read_text().splitlines()[1:]] == labels
    # --threshold replaces the checkpoint's rules; and a model trained on steady people knows this one
    code, out, err = infer(str(clip), "-c", str(ckpt), "--json", str(tmp_path / "p.json"), "--threshold", "0")
    doc = json.loads((tmp_path / "p.json").read_text())
    assert code == 0 and doc["label"] in ("swing", "sway") and doc["smoothing"]["rules"] is None
    familiar = make_checkpoint(tmp_path / "familiar.ckpt", class_names=("swing", "sway"), novelty=rules["steady"])
    code, out, err = infer(str(clip), "-c", str(familiar), "--json", str(tmp_path / "f.json"))
    assert code == 0 and json.loads((tmp_path / "f.json").read_text())["label"] in ("swing", "sway")


def test_the_background_class_is_no_action(tmp_path):
    ckpt = make_checkpoint(tmp_path / "bg.ckpt", class_names=("background", "walk"), bias={"background": 10.0})
    clip = write_clip(tmp_path / "idle.avi", frames=30)
    code, out, err = infer(str(clip), "-c", str(ckpt), "--json", str(tmp_path / "o.json"), "--save-video", str(tmp_path / "o.avi"))
    assert code == 0, err
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["segments"] == [] and doc["label"] == "background"  # never a segment
    assert {p["label"] for f in doc["frames"][8:] for p in f["tracks"]} == {"background"}  # after the warm-up


def test_export_then_run_the_folder_with_each_backend(tmp_path, tiny_export, monkeypatch):
    ckpt = make_checkpoint(tmp_path / "best.ckpt", rejection={"threshold": 0.3})  # tiny_checkpoint's weights
    graphs_from(tiny_export, monkeypatch)  # traced once for the session; the rest of the export runs here
    clip = write_clip(tmp_path / "a.avi", frames=16)
    code, out, err = infer("--export", str(tmp_path / "exported"), "-c", str(ckpt))
    assert code == 0, err
    assert out.startswith(f"exported: {tmp_path / 'exported'} (extractor.onnx, branches0.onnx") and "OpenVINO IR" in out
    docs = {}
    for backend, source in (("torch", ckpt), ("onnxruntime", tmp_path / "exported"), ("openvino", tmp_path / "exported")):
        code, out, err = infer(str(clip), "-c", str(source), "--backend", backend, "--csv", str(tmp_path / f"{backend}.csv"),
                               "--json", str(tmp_path / f"{backend}.json"))  # fmt: skip
        assert code == 0, err
        with open(tmp_path / f"{backend}.csv") as f:
            docs[backend] = list(csv.reader(f))[1:]
        # the export carries the checkpoint's warm-up, so the settled labels leave out the same frames
        settled = json.loads((tmp_path / f"{backend}.json").read_text())
        assert settled["smoothing"]["warmup_frames"] == 8, backend
        docs[backend + " video"] = [settled["video"]["probs"][n] for n in settled["classes"]]
    for backend in ("onnxruntime", "openvino"):  # every frame and person: the same track, label and probabilities
        assert len(docs[backend]) == len(docs["torch"]) >= 16
        for got, want in zip(docs[backend], docs["torch"]):
            assert got[:4] == want[:4]
            assert max(abs(float(a) - float(b)) for a, b in zip(got[4:], want[4:])) < 1e-3
        assert np.allclose(docs[backend + " video"], docs["torch video"], atol=1e-3)
    # a checkpoint with another backend runs the export beside it (made on first use: tests/test_export.py; an
    # export of this same checkpoint put there, so that it is reused, not made again)
    shutil.copytree(tmp_path / "exported", tmp_path / "best.export")
    stamp = (tmp_path / "best.export" / "export.json").stat().st_mtime_ns
    code, out, err = infer(str(clip), "-c", str(ckpt), "--backend", "onnxruntime")
    assert code == 0 and (tmp_path / "best.export" / "export.json").stat().st_mtime_ns == stamp, err
    code, _, err = infer(str(clip), "-c", str(tmp_path / "exported"), "--backend", "torch")
    assert "without PyTorch weights" in one_line_error(code, err)
    code, _, err = infer(str(clip), "--export", str(tmp_path / "x"), "-c", str(ckpt))
    assert "give no videos" in one_line_error(code, err)

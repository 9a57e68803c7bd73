"""A matrix of bad inputs and misuse against ``infer.py`` and ``train.py``: each is one ``error:`` line that
names the problem, a non-zero exit and no traceback; files that can be read are read. Most run in this
process (``__main__`` as a user runs it) to stay fast; what could crash or must be signalled runs in a child."""

from __future__ import annotations

import argparse
import json
import logging
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_MODEL, make_checkpoint, make_dataset, run_script, write_clip, write_raw_avi


def run_tool(capsys, script: str, *args: str) -> tuple[int, str, str]:
    """``python SCRIPT ARGS`` in this process; returns exit status, stdout, stderr. An exception that escapes
    is a traceback a user would see: it fails the test."""
    code, old = 0, sys.argv
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    for lg in loggers:  # handlers made at import hold that moment's stderr, which pytest has closed since
        for h in lg.handlers:
            if isinstance(h, logging.StreamHandler) and getattr(h.stream, "closed", False):
                h.stream = sys.stderr  # not setStream: it flushes the closed one
    try:
        sys.argv = [script, *args]
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(code: int, err: str) -> str:
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good and bad inputs, made once."""
    d = tmp_path_factory.mktemp("inputs")
    good = write_clip(d / "good.avi", frames=10)
    jpeg = d / "photo.jpg"
    cv2.imwrite(str(jpeg), np.full((48, 64, 3), 128, np.uint8))
    png = d / "still.png"
    cv2.imwrite(str(png), np.full((48, 64, 3), 90, np.uint8))
    zero = d / "zero.avi"
    cv2.VideoWriter(str(zero), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48)).release()
    long = write_clip(d / "long.avi", frames=60)
    ckpt = make_checkpoint(d / "ckpt" / "tiny.ckpt")
    out = {
        "good": good, "jpeg": jpeg, "png": png, "zero": zero, "ckpt": ckpt,
        "jpeg_as_mp4": d / "photo.mp4", "png_as_avi": d / "still.avi", "text": d / "notes.mp4", "random": d / "random.avi",
        "empty": d / "empty.mp4", "cut": d / "cut.avi", "raw": write_raw_avi(d / "raw.avi"), "folder": d / "nothing_here",
        "empty_ckpt": d / "empty.ckpt", "half_ckpt": d / "half.ckpt", "text_ckpt": d / "text.ckpt", "foreign_ckpt": d / "foreign.ckpt",
        "pickle_ckpt": d / "model.pt", "legacy_ckpt": d / "legacy.ckpt", "binary_ckpt": d / "binary.ckpt", "long_name": d / ("x" * 251 + ".avi"), "broken_link": d / "gone.avi",
    }  # fmt: skip
    shutil.copy(jpeg, out["jpeg_as_mp4"])
    shutil.copy(png, out["png_as_avi"])
    out["text"].write_text("not a video\n" * 50)
    out["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes())
    out["empty"].write_bytes(b"")
    data = long.read_bytes()
    out["cut"].write_bytes(data[: len(data) * 4 // 10])  # the end of the file is lost: 60 frames declared
    out["folder"].mkdir()
    out["empty_ckpt"].write_bytes(b"")
    raw = ckpt.read_bytes()
    out["half_ckpt"].write_bytes(raw[: len(raw) // 2])
    out["text_ckpt"].write_text("this is not a checkpoint")
    torch.save({"state_dict": {}}, out["foreign_ckpt"])
    torch.save({"model": argparse.Namespace(layers=3)}, out["pickle_ckpt"])  # Python objects, as a YOLO .pt holds
    torch.save({"state_dict": {}}, out["legacy_ckpt"], _use_new_zipfile_serialization=False)  # torch before 1.6
    out["binary_ckpt"].write_bytes(b"\x80" + np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())  # a pickle's first byte
    shutil.copy(good, out["long_name"])
    os.symlink(d / "never-there.avi", out["broken_link"])
    return out


# ---- infer.py: sources that are not (readable) videos ------------------------------------------------------------

BAD_SOURCES = {
    "missing": ("missing.avi", "no such file"),
    "folder-without-videos": ("folder", "holds no video files"),
    "random-bytes": ("random", "cannot open"),
    "zero-frames": ("zero", "no frames"),
    "text-as-mp4": ("text", "notes.mp4"),
    "jpeg": ("jpeg", "JPEG image, not a video"),
    "jpeg-renamed-mp4": ("jpeg_as_mp4", "JPEG image, not a video"),
    "png-renamed-avi": ("png_as_avi", "PNG image, not a video"),
    "empty-file": ("empty", "empty file"),
    "broken-link": ("broken_link", "no such file"),
    "no-glob-match": ("nomatch*.avi", "no files match"),
    "unreachable-url": ("http://127.0.0.1:9/stream.mp4", "127.0.0.1:9"),
}


@pytest.mark.parametrize("name", BAD_SOURCES)
def test_infer_bad_source(capsys, tmp_path, files, name):
    key, message = BAD_SOURCES[name]
    src = str(files[key]) if key in files else key if "://" in key else str(tmp_path / key)
    code, _, err = run_tool(capsys, "infer.py", src, "-c", str(files["ckpt"]), "--json", str(tmp_path / "o.json"), "-q")
    assert message in one_error_line(code, err)
    assert not list(tmp_path.glob("o*.json"))


# ---- infer.py: option values ----------------------------------------------------------------------------------------

BAD_OPTIONS = {
    "batch-size-0": (["--batch-size", "0"], "--batch-size must be >= 1"),
    "batch-size-negative": (["--batch-size", "-4"], "--batch-size must be >= 1"),
    "workers-0": (["--workers", "0"], "--workers must be >= 1"),
    "threads-0": (["--threads", "0"], "--threads must be >= 1"),
    "smooth-negative": (["--smooth", "-1"], "--smooth must be >= 0"),
    "smooth-nan": (["--smooth", "nan"], "--smooth must be >= 0"),
    "min-segment-negative": (["--min-segment", "-1"], "--min-segment must be >= 0"),
    "top-k-negative": (["--top-k", "-1"], "--top-k must be >= 1"),
    "top-k-not-a-number": (["--top-k", "three"], "--top-k"),
    "threshold-above-1": (["--threshold", "2"], "--threshold must be >= 0 and <= 1"),
    "max-people-0": (["--max-people", "0"], "--max-people must be >= 1"),
    "lost-time-negative": (["--lost-time", "-1"], "--lost-time must be >= 0"),
    "display-threshold": (["--display-threshold", "1.5"], "--display-threshold"),
    "reset-after-negative": (["--reset-after", "-2"], "--reset-after"),
    "duration-0": (["--duration", "0"], "--duration must be > 0"),
    "serve-port-out-of-range": (["--serve", "127.0.0.1:99999"], "port from 1 to 65535"),
    "serve-no-port": (["--serve", "localhost"], "HOST:PORT"),
    "unknown-tracker": (["--tracker", "sort"], "invalid choice"),
    "unknown-option": (["--colour", "red"], "unrecognized arguments"),
    "device-banana": (["--device", "banana"], "not a device name"),
    "device-cuda-index-absent": (["--device", "cuda:7"], "not available"),
}


@pytest.mark.parametrize("name", BAD_OPTIONS)
def test_infer_bad_option(capsys, tmp_path, files, name):
    args, message = BAD_OPTIONS[name]
    code, _, err = run_tool(capsys, "infer.py", str(files["good"]), "-c", str(files["ckpt"]), *args, "-q")
    assert message in one_error_line(code, err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_infer_cuda_without_a_gpu(capsys, files):
    code, _, err = run_tool(capsys, "infer.py", str(files["good"]), "-c", str(files["ckpt"]), "--device", "cuda", "-q")
    assert "no CUDA GPU" in one_error_line(code, err)


def test_infer_without_checkpoint_or_source(capsys, files):
    assert "--checkpoint" in one_error_line(*run_tool(capsys, "infer.py", str(files["good"]))[::2])
    assert "at least one video" in one_error_line(*run_tool(capsys, "infer.py", "-c", str(files["ckpt"]))[::2])


# ---- infer.py: checkpoints and weights --------------------------------------------------------------------------------

BAD_CHECKPOINTS = {
    "missing": ("nowhere.ckpt", "not found"),
    "empty": ("empty_ckpt", "not a readable checkpoint (empty file)"),
    "truncated": ("half_ckpt", "not a readable checkpoint (damaged or cut short"),
    "text": ("text_ckpt", "not a readable checkpoint (not a PyTorch file)"),
    "foreign": ("foreign_ckpt", "not a checkpoint of this pipeline (no class names"),
    "legacy-foreign": ("legacy_ckpt", "not a checkpoint of this pipeline (no class names"),  # read, not refused unread
    "pickled-objects": ("pickle_ckpt", "not a checkpoint of this pipeline (it holds Python objects such as argparse.Namespace"),
    "a-video": ("good", "not a readable checkpoint (not a PyTorch file)"),
}


@pytest.mark.parametrize("name", BAD_CHECKPOINTS)
def test_infer_bad_checkpoint(capsys, tmp_path, files, name):
    key, message = BAD_CHECKPOINTS[name]
    ckpt = str(files[key]) if key in files else str(tmp_path / key)
    code, _, err = run_tool(capsys, "infer.py", str(files["good"]), "-c", ckpt, "-q")
    line = one_error_line(code, err)
    assert message in line
    assert key == "nowhere.ckpt" or "give a .ckpt that train.py wrote" in line  # what to do, not torch's advice


def test_infer_weights_that_are_not_the_checkpoints(capsys, tmp_path, files):
    other = tmp_path / "other.pt"
    other.write_bytes(b"junk" * 100)
    code, _, err = run_tool(capsys, "infer.py", str(files["good"]), "-c", str(files["ckpt"]), "--weights", str(other), "-q")
    line = one_error_line(code, err)
    assert "other.pt" in line and len(err.strip().splitlines()) <= 2  # not Ultralytics' page of advice


# ---- infer.py: outputs -----------------------------------------------------------------------------------------------


def test_infer_outputs_that_cannot_be_written_fail_before_any_work(capsys, tmp_path, files):
    (tmp_path / "file").write_text("x")
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    cases = [
        (["--json", str(tmp_path / "file" / "o.json")], "cannot write"),
        (["--json", str(tmp_path)], "it is a folder"),
        (["--save-video", str(tmp_path / "o.xyz")], "cannot write video"),
        (["--plot", str(tmp_path / "file" / "o.png"), "--json", str(tmp_path / "ok.json")], "cannot write"),
        (["--output", str(tmp_path / "file")], "cannot write"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((["--plot", str(ro / "o.png"), "--json", str(tmp_path / "ok.json")], "permission denied"))
    for args, message in cases:
        code, _, err = run_tool(capsys, "infer.py", str(files["good"]), "-c", str(files["ckpt"]), *args, "-q")
        assert message in one_error_line(code, err), args
    assert not (tmp_path / "ok.json").exists()  # the plot was checked before the video was analysed


def test_infer_several_videos_need_an_output_folder(capsys, tmp_path, files):
    code, _, err = run_tool(capsys, "infer.py", str(files["good"]), str(files["good"]), "-c", str(files["ckpt"]), "--json", str(tmp_path / "o.json"))
    assert "--output DIR" in one_error_line(code, err)


def test_infer_live_mode_refuses_file_outputs(capsys, tmp_path, files):
    code, _, err = run_tool(capsys, "infer.py", "0", "-c", str(files["ckpt"]), "--json", str(tmp_path / "o.json"), "--no-show")
    assert "live mode" in one_error_line(code, err)


def test_infer_camera_that_is_not_there(capsys, files):
    code, _, err = run_tool(capsys, "infer.py", "--source", "9", "-c", str(files["ckpt"]), "--no-show", "--duration", "2")
    assert "camera 9" in one_error_line(code, err)


def test_infer_all_sources_missing_is_said_before_the_model_loads(capsys, tmp_path, files, monkeypatch):
    import pipeline.inference.predictor

    def never(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pipeline.inference.predictor.ActionPredictor, "__init__", never)
    code, _, err = run_tool(capsys, "infer.py", str(tmp_path / "a.avi"), str(tmp_path / "b.avi"), "-c", str(files["ckpt"]), "-o", str(tmp_path))
    assert "none of the 2 videos" in one_error_line(code, err)


BEFORE_TORCH = {  # what is given, and the start of its error
    "video": ("gone.avi", "ckpt", "{video}: no such file"),
    "checkpoint": ("good", "gone.ckpt", "checkpoint {ckpt} not found"),
    "random-bytes-video": ("random", "ckpt", "{video}: cannot open file (not a video"),
    "text-video": ("text", "ckpt", "{video}: cannot open file (not a video"),
    "empty-checkpoint": ("good", "empty_ckpt", "{ckpt}: not a readable checkpoint (empty file)"),
    "cut-checkpoint": ("good", "half_ckpt", "{ckpt}: not a readable checkpoint (damaged or cut short"),
    "text-checkpoint": ("good", "text_ckpt", "{ckpt}: not a readable checkpoint (not a PyTorch file)"),
    "binary-checkpoint": ("good", "binary_ckpt", "{ckpt}: not a readable checkpoint (not a PyTorch file)"),
    "video-as-checkpoint": ("good", "good", "{ckpt}: not a readable checkpoint (not a PyTorch file)"),
    "export": ("--export", "text_ckpt", "{ckpt}: not a readable checkpoint (not a PyTorch file)"),  # every mode
    "live": ("--live", "text_ckpt", "{ckpt}: not a readable checkpoint (not a PyTorch file)"),
}


@pytest.mark.parametrize("what", BEFORE_TORCH)
def test_infer_missing_video_or_checkpoint_is_said_before_torch_loads(tmp_path, files, what):
    """A wrong name, or a file that cannot be a checkpoint, is said in an instant: the error classes and the
    checks import neither torch nor Ultralytics (they took seconds to load before the file was named)."""
    video, ckpt, message = BEFORE_TORCH[what]
    video, ckpt = (files[k] if k in files else tmp_path / k for k in (video, ckpt))
    mode = {"--export": ["--export", str(tmp_path / "out")], "--live": ["--live", "--source", "0", "--no-show"]}.get(video.name, [str(video)])
    code = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print(sorted(m for m in ('torch', 'ultralytics', 'lightning') if m in sys.modules)))\n"
        f"sys.argv = ['infer.py', *{mode!r}, '-c', {str(ckpt)!r}]\n"
        "runpy.run_path('infer.py', run_name='__main__')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: " + message.format(video=video, ckpt=ckpt)), r.stderr
    assert r.stdout.strip() == "[]", r.stdout


# ---- infer.py: batches go on past bad files ---------------------------------------------------------------------------


def test_infer_batch_reports_bad_files_and_processes_the_rest(capsys, tmp_path, files):
    srcs = [files[k] for k in ("good", "random", "jpeg_as_mp4", "long_name", "zero", "text")]
    code, out, err = run_tool(capsys, "infer.py", *map(str, srcs), str(tmp_path / "missing.avi"), "-c", str(files["ckpt"]), "-o", str(tmp_path / "o"), "-q")
    assert code == 0 and "Traceback" not in err, err
    assert "failed: 5 of 7 videos" in err
    for bad in ("random.avi", "photo.mp4", "zero.avi", "notes.mp4", "missing.avi"):
        assert bad in err
    names = sorted(p.name for p in (tmp_path / "o").glob("*.json"))
    assert len(names) == 2 and "good.json" in names  # the 251-byte name got a shortened output name
    assert all(len(n.encode()) <= 255 for n in os.listdir(tmp_path / "o"))
    assert not list((tmp_path / "o").glob("*.partial.*"))


def test_infer_truncated_video_is_labelled_and_says_how_much_was_read(capsys, tmp_path, files):
    code, out, err = run_tool(capsys, "infer.py", str(files["cut"]), "-c", str(files["ckpt"]), "--json", str(tmp_path / "o.json"), "-q")
    assert code == 0, err
    assert "warning: read" in out and "of 60 declared frames" in out
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["declared_frames"] == 60 and doc["frame_count"] < 54 and doc["truncated"] is True


def test_infer_full_disk_leaves_no_broken_output_and_says_what_finished(capsys, tmp_path, files, monkeypatch):
    import errno

    import pipeline.inference.outputs

    calls = {"n": 0}
    real = pipeline.inference.outputs.CsvTimeline.frame

    def frame(self, *a):
        calls["n"] += 1
        if calls["n"] > 15:  # the second video runs out of space
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a)

    monkeypatch.setattr(pipeline.inference.outputs.CsvTimeline, "frame", frame)
    second = write_clip(tmp_path / "second.avi", frames=20)
    code, _, err = run_tool(capsys, "infer.py", str(files["good"]), str(second), "-c", str(files["ckpt"]), "-o", str(tmp_path / "o"), "-q")
    line = one_error_line(code, err)
    assert "No space left on device" in line and "1 of 2 video(s) finished" in line
    left = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert left == ["good.csv", "good.json", "good.mp4", "good.png"], left  # complete ones only, no partial files


# ---- infer.py in a child process: native crashes and signals --------------------------------------------------------


def test_uncompressed_avi_is_read_not_a_crash(tmp_path, files):
    """OpenCV's reader aborts the process on this file; it is decoded by PyAV instead, alone and in a batch."""
    r = run_script("infer.py", str(files["raw"]), "-c", str(files["ckpt"]), "--json", str(tmp_path / "raw.json"), "-q")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "raw.json").read_text())["frame_count"] == 12
    r = run_script("infer.py", str(files["raw"]), str(files["good"]), "-c", str(files["ckpt"]), "-o", str(tmp_path / "o"), "-q")
    assert r.returncode == 0 and sorted(p.name for p in (tmp_path / "o").glob("*.json")) == ["good.json", "raw.json"], r.stderr[-2000:]


def test_sigterm_during_a_file_run_keeps_no_partial_output_and_exits_non_zero(tmp_path, files):
    clip = write_clip(tmp_path / "long.avi", frames=3000, size=(64, 48))
    out = tmp_path / "o.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(
        [sys.executable, "infer.py", str(clip), "-c", str(files["ckpt"]), "--json", str(out), "--csv", str(tmp_path / "o.csv"), "-q",
         "--batch-size", "4"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (tmp_path / "o.partial.json").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert p.poll() is None, p.communicate()[1][-2000:]
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0 and "Traceback" not in err, err
    assert "interrupted" in err and "0 of 1 video(s) finished" in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["long.avi"]  # no JSON, no CSV, no partial file


# ---- train.py -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "toy", classes=("walk", "wave"), frames=8)


def train_args(tmp: Path, root: Path, *extra: str, sub: str = "fit") -> list[str]:
    return [
        sub, "--config", "configs/weizmann.yaml", "--data.dataset", str(root), "--data.split", "stratified", "--data.num_folds", "1",
        "--data.extractor.weights", TINY_MODEL, "--data.extractor.imgsz", "64", "--data.cache_dir", str(tmp / "cache"),
        "--trainer.max_epochs", "1", "--trainer.logger", json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp / "runs")}}]),
        *extra,
    ]  # fmt: skip


BAD_TRAIN_OPTIONS = {
    "imgsz-0": (["--data.extractor.imgsz", "0"], "--data.extractor.imgsz must be >= 32"),
    "imgsz-negative": (["--data.extractor.imgsz", "-64"], "--data.extractor.imgsz must be >= 32"),
    "conf-2": (["--data.extractor.conf", "2"], "--data.extractor.conf must be > 0 and <= 1"),
    "fps-negative": (["--data.extractor.fps", "-5"], "--data.extractor.fps must be > 0"),
    "pool-unknown": (["--data.extractor.pool", "max"], "--data.extractor.pool 'max' is not one of"),
    "layers-out-of-range": (["--data.extractor.layers", "[99]"], "--data.extractor.layers [99] invalid"),
    "layers-not-increasing": (["--data.extractor.layers", "[19,16]"], "increasing"),
    "max-frames-0": (["--data.extractor.max_frames", "0"], "--data.extractor.max_frames must be >= 1"),
    "clip-len-0": (["--data.clip_len", "0"], "--data.clip_len must be >= 1"),
    "min-len-above-clip-len": (["--data.min_len", "64"], "--data.min_len must be >= 1 and <= 32"),
    "batch-size-0": (["--data.batch_size", "0"], "--data.batch_size must be >= 1"),
    "flip-2": (["--data.flip", "2"], "--data.flip must be >= 0 and <= 1"),
    "drop-1": (["--data.drop", "1"], "--data.drop"),
    "fold-negative": (["--data.fold", "-1"], "--data.fold must be >= 0"),
    "fold-too-large": (["--data.num_folds", "2", "--data.fold", "5"], "fold 5 of 2 folds"),
    "split-unknown": (["--data.split", "random"], "split 'random'"),
    "cell-unknown": (["--model.cell", "transformer"], "--model.cell 'transformer' is not one of gru, lstm, rnn"),
    "streams-unknown": (["--model.streams", "both"], "--model.streams 'both'"),
    "lr-0": (["--model.lr", "0"], "--model.lr must be > 0"),
    "dropout-1.5": (["--model.dropout", "1.5"], "--model.dropout"),
    "hidden-size-0": (["--model.hidden_size", "0"], "--model.hidden_size must be >= 1"),
    "label-smoothing-1": (["--model.label_smoothing", "1"], "--model.label_smoothing"),
    "max-epochs-text": (["--trainer.max_epochs", "abc"], "invalid value 'abc'"),
    "unknown-option": (["--data.bogus", "1"], "unrecognized arguments"),
    "device-banana": (["--trainer.accelerator", "banana"], "banana"),
    "num-workers-negative": (["--data.num_workers", "-1"], "--data.num_workers must be >= 0"),
    "val-fraction-1": (["--data.val_fraction", "1"], "--data.val_fraction"),
    "weights-not-found": (["--data.extractor.weights", "yolo99z-pose.pt"], "yolo99z-pose.pt"),
}
if not torch.cuda.is_available():
    BAD_TRAIN_OPTIONS["gpu-without-a-gpu"] = (["--trainer.accelerator", "gpu"], "trainer settings")


@pytest.mark.parametrize("name", BAD_TRAIN_OPTIONS)
def test_train_bad_option(capsys, tmp_path, toy, name):
    args, message = BAD_TRAIN_OPTIONS[name]
    code, _, err = run_tool(capsys, "train.py", *train_args(tmp_path, toy, *args))
    assert message in one_error_line(code, err)


def _one_class(tmp: Path) -> Path:
    write_clip(tmp / "one" / "walk" / "a_walk.avi", frames=6)
    return tmp / "one"


def _loose_videos(tmp: Path) -> Path:
    write_clip(tmp / "loose" / "a_walk.avi", frames=6)
    return tmp / "loose"


def _yaml(tmp: Path, text: str) -> Path:
    (tmp / "d.yaml").write_text(text)
    return tmp / "d.yaml"


BAD_DATASETS = {
    "one-class": (_one_class, "at least 2 class folders"),
    "videos-without-class-folders": (_loose_videos, "no class folders"),
    "root-missing": (lambda t: t / "nowhere", "not found"),
    "yaml-syntax-error": (lambda t: _yaml(t, "name: x\nclasses: [a, b\n"), "not a readable dataset YAML"),
    "yaml-a-list": (lambda t: _yaml(t, "- a\n- b\n"), "a mapping of keys"),
    "yaml-unknown-key": (lambda t: _yaml(t, "name: x\nclases: [a, b]\n"), "unknown keys"),
}


@pytest.mark.parametrize("name", BAD_DATASETS)
def test_train_bad_dataset(capsys, tmp_path, name):
    make, message = BAD_DATASETS[name]
    code, _, err = run_tool(capsys, "train.py", *train_args(tmp_path, make(tmp_path)))
    assert message in one_error_line(code, err)


def test_train_root_that_is_a_file_and_cache_that_is_read_only(capsys, tmp_path, toy):
    f = tmp_path / "file.txt"
    f.write_text("x")
    code, _, err = run_tool(capsys, "train.py", *train_args(tmp_path, toy, "--data.root", str(f)))
    assert "is a file" in one_error_line(code, err)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        code, _, err = run_tool(capsys, "train.py", *train_args(tmp_path, toy, "--data.cache_dir", str(ro)))
        assert "--data.cache_dir" in one_error_line(code, err)


def test_train_predict_is_not_offered(capsys):
    code, out, err = run_tool(capsys, "train.py", "--help")
    assert code == 0 and "predict" not in out
    assert "invalid choice: 'predict'" in one_error_line(*run_tool(capsys, "train.py", "predict")[::2])


@pytest.mark.parametrize("key", ["empty_ckpt", "half_ckpt", "text_ckpt", "foreign_ckpt", "pickle_ckpt"])
def test_train_bad_checkpoint(capsys, tmp_path, toy, files, key):
    code, _, err = run_tool(capsys, "train.py", *train_args(tmp_path, toy, "--ckpt_path", str(files[key]), sub="test"))
    assert "checkpoint" in one_error_line(code, err)


def test_train_corrupt_weights_file(capsys, tmp_path, toy):
    bad = tmp_path / "broken-pose.pt"
    bad.write_bytes(b"PK\x03\x04" + os.urandom(500))
    code, _, err = run_tool(capsys, "train.py", *train_args(tmp_path, toy, "--data.extractor.weights", str(bad)))
    line = one_error_line(code, err)
    assert "not a loadable Ultralytics checkpoint" in line and len(line) < 250 and line.isascii(), line
    assert len([ln for ln in err.splitlines() if ln.strip()]) <= 2, err


def test_sigterm_during_training_exits_non_zero_and_says_so(tmp_path, toy):
    p = subprocess.Popen(
        [sys.executable, "train.py", *train_args(tmp_path, toy, "--trainer.max_epochs", "100000", "--data.val_fraction", "0.25", "--data.test_fraction", "0.25")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 180
    while not list((tmp_path / "cache").rglob("*.npz")) and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # into the epochs
    assert p.poll() is None, p.communicate()[1][-2000:]
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert "stopped by SIGTERM" in one_error_line(p.returncode, err)


# ---- teach.py: each mistake is one line before anything listens
BAD_TEACH = {
    "missing source": (["--source", "{tmp}/nope.mp4"], "no such file"),
    "not a video": (["--source", "{jpeg}"], "{jpeg}"),
    "no camera": (["--source", "7"], "camera 7: cannot open it"),
    "examples is a file": (["--examples", "{good}"], "is a file: give a folder"),
    "missing config": (["--config", "{tmp}/nope.yaml"], "cannot read data.extractor"),
    "broken config": (["--config", "{broken}"], "at line 2"),
    "weights not there": (["--config", "{badweights}"], "nothere-pose.pt"),
    "port out of range": (["--port", "99999"], "--port 99999"),
}  # fmt: skip


@pytest.fixture
def teach_configs(tmp_path) -> dict[str, Path]:
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "teach.yaml").read_text())
    out = {"broken": tmp_path / "broken.yaml", "tiny": tmp_path / "tiny.yaml", "badweights": tmp_path / "badweights.yaml"}
    out["broken"].write_text("data: [1,2\n")
    cfg["data"]["extractor"].update(weights=TINY_MODEL, imgsz=64)
    out["tiny"].write_text(yaml.safe_dump(cfg))
    cfg["data"]["extractor"]["weights"] = "nothere-pose.pt"
    out["badweights"].write_text(yaml.safe_dump(cfg))
    return out


@pytest.mark.parametrize("name", BAD_TEACH)
def test_teach_bad_input(capsys, tmp_path, files, teach_configs, name):
    fill = {"tmp": tmp_path, "jpeg": files["jpeg"], "good": files["good"], **teach_configs}
    args, expect = BAD_TEACH[name]
    args = [a.format(**fill) for a in args]
    defaults = ["--source", str(files["good"]), "--examples", str(tmp_path / "mine"), "--port", "0", "--config", str(teach_configs["tiny"])]
    code, _, err = run_tool(capsys, "teach.py", *defaults, *args)  # the last of a repeated option wins
    assert expect.format(**fill) in one_error_line(code, err)


def test_teach_busy_port(capsys, tmp_path, files, teach_configs):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        code, _, err = run_tool(
            capsys, "teach.py", "--source", str(files["good"]), "--examples", str(tmp_path / "m"), "--port", str(port), "--config", str(teach_configs["tiny"])
        )
    assert f"cannot listen on 127.0.0.1:{port}" in one_error_line(code, err)


def test_full_disk_at_a_videos_end_leaves_none_of_its_outputs_under_a_final_name(capsys, tmp_path, files, monkeypatch):
    """The annotated video is the last to be finished; when it cannot be, its JSON, CSV and plot, complete
    by then, are not left behind as if the video's outputs were."""
    import errno

    import pipeline.inference.outputs

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline.inference.outputs.VideoSink, "complete", full)
    code, _, err = run_tool(capsys, "infer.py", str(files["good"]), str(files["good"]), "-c", str(files["ckpt"]), "-o", str(tmp_path / "o"), "-q")
    line = one_error_line(code, err)
    assert "No space left on device" in line and "0 of 2 video(s) finished" in line
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [], sorted(p.name for p in (tmp_path / "o").iterdir())


def test_a_signal_while_the_interpreter_shuts_down_exits_143_without_a_traceback(tmp_path):
    """As infer.py: a SIGTERM handler that raises KeyboardInterrupt; the signal comes from an exit handler, after
    the work (here deterministic: the exit handler sends it)."""
    code = (
        "import atexit, os, signal, time\n"
        "from pipeline.errors import run_cli\n"
        "def stop(*_): raise KeyboardInterrupt\n"
        "def main():\n"
        "    signal.signal(signal.SIGTERM, stop)\n"
        "    print('outputs written')\n"
        "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(2)))\n"
        "run_cli(main)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 143 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    assert r.stdout.strip() == "outputs written"


def test_infer_checkpoint_that_is_an_empty_folder(capsys, tmp_path, files):
    (tmp_path / "empty").mkdir()
    code, _, err = run_tool(capsys, "infer.py", str(files["good"]), "-c", str(tmp_path / "empty"), "-q")
    line = one_error_line(code, err)
    assert "-c takes a checkpoint file" in line and "this is neither" in line, line


def test_file_names_that_are_not_utf8_are_labelled_and_named(tmp_path, files):
    """Bytes a Linux file system allows in a name, not UTF-8: OpenCV's reader crashed on them in native code,
    the output name and the printed lines raised. In a child process: a native crash would end pytest."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(files["good"], os.fsdecode(os.fsencode(src) + b"/\xffclip\xfe.avi"))
    (src / os.fsdecode(b"\xfe broken.mp4")).write_bytes(b"garbage" * 50)
    r = run_script("infer.py", str(src), "-c", str(files["ckpt"]), "-o", str(tmp_path / "o"), "-q")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "failed: 1 of 2 videos" in r.stderr and "broken.mp4" in r.stderr
    made = sorted(os.fsencode(p.name) for p in (tmp_path / "o").iterdir())
    assert made == [b"\xffclip\xfe." + e for e in (b"csv", b"json", b"mp4", b"png")], made  # the source's own bytes
    assert "clip" in r.stdout and ": " in r.stdout  # its line, escaped where it is not UTF-8

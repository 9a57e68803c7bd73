"""File mode over worker processes (``infer.py --workers N``): the one-process results, failures as rows,
a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, write_clip

from pipeline.inference.files import analyse_many
from pipeline.inference.predictor import ActionPredictor
from pipeline.inference.workers import PredictorSpec, RunStats, WorkerError, analyse_parallel, default_workers


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("clips")
    return [str(write_clip(d / f"v{i}.avi", frames=14 + 5 * i, seed=i, speed=1.0 + i)) for i in range(4)]


def _without_timing(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "processing_fps"}


def test_two_workers_give_one_process_results_in_source_order(clips, tiny_checkpoint, tmp_path):
    one, failed_one = analyse_many(clips, ActionPredictor(tiny_checkpoint, device="cpu"), tmp_path / "one", None, progress=False, echo=False)
    stats = RunStats()
    two, failed_two = analyse_parallel(clips, PredictorSpec(str(tiny_checkpoint), "cpu"), 2, tmp_path / "two", None, progress=False, stats=stats)
    assert not failed_one and not failed_two
    assert [r.source for r in two] == clips  # the order of the sources, whichever worker finished first
    assert [(r.label, r.processed_frames, [t.frames for t in r.tracks]) for r in two] == [(r.label, r.processed_frames, [t.frames for t in r.tracks]) for r in one]
    assert all(abs(a.score - b.score) < 1e-5 for a, b in zip(one, two))
    for c in clips:  # every output written, the same as one process writes it
        stem = os.path.splitext(os.path.basename(c))[0]
        a, b = (json.loads((tmp_path / d / f"{stem}.json").read_text()) for d in ("one", "two"))
        assert _without_timing(a) == _without_timing(b)
    assert stats.workers == 2 and len(set(stats.pids)) == 2 and stats.frames == sum(r.processed_frames for r in two)


def test_a_bad_video_is_a_failure_row_not_the_end(clips, tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    sources = [clips[0], str(bad), clips[1]]
    results, failed = analyse_parallel(sources, PredictorSpec(str(tiny_checkpoint), "cpu"), 2, None, None, progress=False, echo=False)
    assert [r.source for r in results] == [clips[0], clips[1]]
    assert len(failed) == 1 and failed[0][0] == str(bad) and "bad.mp4" in failed[0][1]


def test_a_worker_that_cannot_load_the_model_stops_the_run_in_one_line(clips, tmp_path):
    wrong = tmp_path / "wrong.ckpt"
    wrong.write_bytes(b"not a checkpoint")
    with pytest.raises(WorkerError, match="could not load the model"):
        analyse_parallel(clips[:2], PredictorSpec(str(wrong), "cpu"), 2, None, None, progress=False, echo=False)


def test_default_workers():
    assert default_workers("cpu", 100) == 1  # the cores are the limit
    assert 1 <= default_workers("cuda", 100) <= 8
    assert default_workers("cuda", 1) == 1


def test_infer_with_workers_prints_every_video_and_writes_its_outputs(clips, tiny_checkpoint, tmp_path):
    r = subprocess.run([sys.executable, "infer.py", *clips, "-c", str(tiny_checkpoint), "-o", str(tmp_path / "o"), "--workers", "2", "--threads", "1", "-q"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(ln.split(":")[0] for ln in r.stdout.splitlines() if not ln.startswith(" ")) == sorted(clips)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(f"v{i}.{e}" for i in range(4) for e in ("csv", "json", "mp4", "png"))


def test_sigterm_stops_every_worker_and_keeps_no_partial_output(tiny_checkpoint, tmp_path):
    long = [str(write_clip(tmp_path / "in" / f"long{i}.avi", frames=1500, size=(64, 48), seed=i)) for i in range(3)]
    out = tmp_path / "o"
    p = subprocess.Popen([sys.executable, "infer.py", *long, "-c", str(tiny_checkpoint), "-o", str(out), "--workers", "2", "-q", "--batch-size", "4"],
                         cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while not list(out.glob("*.partial.*")) and p.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert p.poll() is None, p.communicate()[1][-2000:]
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert "interrupted" in err
    time.sleep(0.5)  # the workers removed their partial files before the parent exited; nothing is left behind
    assert not list(out.glob("*.partial.*")), sorted(x.name for x in out.iterdir())
    for j in out.glob("*.json"):  # whatever finished is complete
        json.loads(j.read_text())

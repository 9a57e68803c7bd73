"""Labelling an archive: every video once over Lightning's processes, one index, resumable after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, make_checkpoint, run_script, write_clip

from pipeline.data.video import expand_sources
from pipeline.inference.archive import INDEX, ROW_KEYS, ArchiveIndex, checkpoint_sha256

VIDEOS = 12


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, Path]:
    """A dozen short clips of different lengths and a corrupt file among them, and a checkpoint."""
    tmp = tmp_path_factory.mktemp("archive")
    for i in range(VIDEOS):
        write_clip(tmp / "clips" / f"clip{i:02d}.avi", frames=30 + 4 * i, seed=i, speed=1.0 + (i % 3))
    (tmp / "clips" / "broken.avi").write_bytes(b"RIFF not a video at all" * 40)
    return tmp / "clips", make_checkpoint(tmp / "best.ckpt")


def label(clips: Path, ckpt: Path, out: Path, devices: str, *extra: str) -> subprocess.CompletedProcess:
    return run_script("infer.py", str(clips), "-c", str(ckpt), "--output", str(out), "--trainer.devices", devices, "--device", "cpu", "-q", *extra)


def index_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / INDEX).read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(archive, tmp_path_factory) -> Path:
    clips, ckpt = archive
    out = tmp_path_factory.mktemp("one") / "out"
    r = label(clips, ckpt, out, "1")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def labels(rows: list[dict]) -> dict[str, tuple]:
    return {Path(r["path"]).name: (r["status"], r["label"], r["score"], json.dumps(r["segments"])) for r in rows}


def test_two_processes_label_every_video_once_as_one_process_does(archive, one_process, tmp_path):
    clips, ckpt = archive
    out = tmp_path / "out"
    r = label(clips, ckpt, out, "2")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = index_rows(out)
    assert len(rows) == VIDEOS + 1 and len({r["path"] for r in rows}) == VIDEOS + 1  # each video once
    assert {r["rank"] for r in rows if r["status"] == "done"} == {0, 1}  # both processes labelled
    assert labels(rows) == labels(index_rows(one_process))
    assert set(rows[0]) == set(ROW_KEYS)
    bad = [r for r in rows if r["status"] == "failed"]  # the corrupt file is one row with its error, not the end
    assert [Path(r["path"]).name for r in bad] == ["broken.avi"] and "broken.avi" in bad[0]["error"]
    assert f"archive: {VIDEOS} done, 1 failed, 0 skipped" in r.stdout and "broken.avi" in r.stderr
    assert all(line.startswith(("archive:", str(clips))) for line in r.stdout.splitlines())  # stdout: results only
    for row in rows:
        for path in row["outputs"].values():
            assert Path(path).is_file()
    assert not list(out.glob("index.rank*")) and not list(out.glob("*partial*"))  # shards merged, nothing half-written


def test_a_run_killed_half_way_finishes_the_rest_with_the_same_results(archive, one_process, tmp_path):
    clips, ckpt = archive
    out = tmp_path / "out"
    args = ["infer.py", str(clips), "-c", str(ckpt), "--output", str(out), "--trainer.devices", "1", "--device", "cpu", "-q"]
    p = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    shard = out / "index.rank0.jsonl"
    try:
        while p.poll() is None and not (shard.is_file() and shard.read_text().count("\n") >= 2):
            time.sleep(0.01)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    killed = [json.loads(line) for line in shard.read_text().splitlines()]
    assert 2 <= len(killed) < VIDEOS + 1 and not (out / INDEX).exists()  # stopped half-way, before any merge
    r = label(clips, ckpt, out, "1")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = index_rows(out)
    assert labels(rows) == labels(index_rows(one_process)) and len(rows) == VIDEOS + 1  # nothing lost or twice
    done_before = {row["path"] for row in killed if row["status"] == "done"}
    assert f"{len(done_before)} skipped (done before)" in r.stdout
    assert {row["path"] for row in rows if row["run"] == killed[0]["run"]} >= done_before  # not labelled again
    assert not list(out.glob("*partial*"))
    # the same command once more: nothing left to do
    again = label(clips, ckpt, out, "1")
    assert f"0 done, 1 failed, {VIDEOS} skipped" in again.stdout  # the failed video is tried again, and fails again
    assert len(index_rows(out)) == VIDEOS + 1


def test_what_counts_as_done(archive, one_process, tmp_path):
    clips, ckpt = archive
    index = ArchiveIndex(one_process)
    rows, model = index.rows(), checkpoint_sha256(ckpt)
    src = next(p for p in rows if p.endswith("clip03.avi"))
    assert index.is_done(rows[src], src, model)
    assert not index.is_done(rows[src], src, "another checkpoint")  # another model starts the labels over
    assert not index.is_done(None, src, model)
    bad = next(p for p in rows if p.endswith("broken.avi"))
    assert not index.is_done(rows[bad], bad, model)  # a failed video is tried again
    copy = tmp_path / "clip03.avi"
    copy.write_bytes(Path(src).read_bytes())  # same content, new time: still done (hashed again)
    assert index.is_done(rows[src], str(copy), model)
    copy.write_bytes(Path(src).read_bytes()[:-10] + b"x" * 10)  # same size, other content
    assert not index.is_done(rows[src], str(copy), model)
    gone = dict(rows[src], outputs={**rows[src]["outputs"], "csv": str(tmp_path / "deleted.csv")})
    assert not index.is_done(gone, src, model)  # an output removed since: done again


def test_the_index_reads_the_last_row_of_each_video_and_skips_a_cut_line(tmp_path):
    index = ArchiveIndex(tmp_path)
    (tmp_path / INDEX).write_text(json.dumps({"path": "a", "label": "old"}) + "\n" + json.dumps({"path": "b", "label": "b"}) + "\n")
    (tmp_path / "index.rank1.jsonl").write_text(json.dumps({"path": "a", "label": "new"}) + '\n{"path": "c", "lab')  # kill -9 mid-line
    assert {k: v["label"] for k, v in index.rows().items()} == {"a": "new", "b": "b"}
    index.merge()
    assert not index.shards() and [json.loads(line)["label"] for line in (tmp_path / INDEX).read_text().splitlines()] == ["new", "b"]


def test_a_list_of_videos_as_text_or_csv(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "list.txt").write_text("# my clips\nv/a.avi\n\n/abs/b.mp4\n")
    (tmp_path / "list.csv").write_text("label,path\nwalk,v/a.avi\nrun,/abs/b.mp4\n")
    want = [str(tmp_path / "v" / "a.avi"), "/abs/b.mp4"]
    assert expand_sources([str(tmp_path / "list.txt")]) == want
    assert expand_sources([str(tmp_path / "list.csv")]) == want


def test_an_archive_needs_an_output_folder(tmp_path):
    r = run_script("infer.py", str(tmp_path), "-c", "x.ckpt", "--trainer.devices", "2")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "give --output" in r.stderr
    r = run_script("infer.py", str(tmp_path), "-c", "x.ckpt", "--output", str(tmp_path / "o"), "--trainer.devices", "two")
    assert r.returncode == 2 and "--trainer.devices takes" in r.stderr

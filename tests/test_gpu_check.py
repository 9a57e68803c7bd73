"""The GPU check as CI runs it: without CUDA, every step at tiny sizes on the CPU, so that the script
that a GPU session has minutes for never rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable}  # the Python running the suite, wherever its environment lives
    r = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "onnxruntime" in r.stdout.splitlines()[0]  # its first line: what this onnxruntime offers
    doc = json.loads(out.read_text())
    assert doc["tiny"] and doc["device"] == "cpu"
    steps = doc["steps"]
    assert set(steps) == {"env", "tests", "forward", "file", "profile", "stream", "train", "onnx", "labels"}
    assert not [k for k, v in steps.items() if "error" in v], {k: v["error"] for k, v in steps.items() if "error" in v}
    assert steps["tests"]["returncode"] == 0 and steps["tests"].get("skipped", 0) > 0  # the CUDA tests skip here
    assert all(row["fps"] > 0 for row in steps["forward"]["rows"])
    assert [row["workers"] for row in steps["file"]["rows"]] == [1, 2] and all(row["frames"] > 0 and not row["failed"] for row in steps["file"]["rows"])
    assert steps["file"]["rows"][0]["labels_per_s"] > 0  # the tiny model sees people: tracks are labelled
    assert all(row["tracked_per_frame"] > 0 for row in steps["stream"]["rows"])
    assert steps["labels"]["cpu_same_labels"] == steps["labels"]["clips"]
    assert steps["onnx"]["same_people"]
    assert "| extractor forward, fp32, batch 1 |" in r.stdout  # the table

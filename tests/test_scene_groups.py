"""benchmarks/scene_groups.py: clips of one scene are one group, whatever their class."""

import csv
import subprocess
import sys

import cv2
from conftest import ROOT, write_clip


def test_clips_are_grouped_by_scene_not_by_class(tmp_path):
    data = tmp_path / "clips"
    for cls, scene, speed in [("a", 1, 1.0), ("a", 1, 2.0), ("b", 1, 3.0), ("a", 2, 1.0), ("b", 2, 2.0), ("b", 2, 3.0)]:
        write_clip(data / cls / f"s{scene}_{speed:.0f}.avi", frames=24, seed=scene, speed=speed)  # the seed draws the background
    (data / "b" / "broken.avi").write_bytes(b"not a video")
    out, sheet = tmp_path / "groups.csv", tmp_path / "sheet.png"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scene_groups.py"), "--root", str(data), "--out", str(out), "--sheet", str(sheet)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "6 clips in 2 scene groups" in r.stdout and "skipped" in r.stdout and "broken.avi" in r.stdout
    rows = list(csv.DictReader(open(out)))
    group = {row["path"].split("/")[-1]: row["group"] for row in rows}
    assert {row["label"] for row in rows} == {"a", "b"} and len(rows) == 6
    assert group["s1_1.avi"] == group["s1_2.avi"] == group["s1_3.avi"] != group["s2_1.avi"] == group["s2_2.avi"] == group["s2_3.avi"]
    assert cv2.imread(str(sheet)).shape[0] == 2 * 54  # one row of median frames per group


def test_a_folder_with_no_readable_clip_is_one_error_line(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.avi").write_bytes(b"not a video")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scene_groups.py"), "--root", str(tmp_path), "--out", str(tmp_path / "g.csv")],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error: no frame could be read from any of the 2 videos") and len(r.stderr.strip().splitlines()) == 1

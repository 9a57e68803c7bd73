"""The teaching app, timed and scored as a user would meet it: 3 actions x 5 clips, Train, then held-out people.

    python benchmarks/teach.py [--sets walk,wave2,jack bend,run,skip ...] [--seconds 2] [--out runs/teach_bench.json]

For each set of three Weizmann actions, starts ``teach.py`` with a fresh examples folder, and through the same
HTTP API the page uses: adds the actions, records one clip of each from 5 actors' clips replayed as the camera
(``--seconds`` each, no countdown), presses Train and times it until the new model labels the stream (the
figure the README quotes: pressing Train to a usable model). Then it scores the model on the 4 actors it never
saw, two ways: **live**, the share of the stream's label readings (5 per second for 3 s, after 1.5 s of warm-up)
that name the right action, and **video**, ``infer.py``'s video-level label of each held-out clip.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ACTORS = ("daria", "denis", "eli", "ido", "ira")
HELD_OUT = ("lena", "lyova", "moshe", "shahar")


def call(base: str, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        return json.loads(urllib.request.urlopen(req, timeout=300).read())
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {path}: {e.code} {e.read().decode()}") from None


def clip(root: Path, action: str, actor: str) -> Path:
    return min((root / action).glob(f"{actor}_*"))  # lena has two runs of some actions: the first


def run_set(actions: list[str], root: Path, seconds: float, work: Path, config: Path) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    first = clip(root, actions[0], TRAIN_ACTORS[0])
    app = subprocess.Popen(
        [sys.executable, str(ROOT / "teach.py"), "--source", str(first), "--examples", str(work / "examples"),
         "--cache-dir", str(work / "cache"), "--port", str(port), "--config", str(config)],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        for _ in range(600):
            try:
                call(base, "GET", "/api/state")
                break
            except (OSError, SystemExit):
                time.sleep(0.1)
        t0 = time.perf_counter()
        for action in actions:
            call(base, "POST", "/api/actions", {"name": action})
            for actor in TRAIN_ACTORS:
                call(base, "POST", "/api/source", {"source": str(clip(root, action, actor))})
                call(base, "POST", "/api/record", {"action": action, "countdown": 0, "seconds": seconds})
                while call(base, "GET", "/api/state")["recording"]:
                    time.sleep(0.05)
        record_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        call(base, "POST", "/api/train")
        stream_fps = []  # the live stream's rate while training runs beside it
        while not (state := call(base, "GET", "/api/state"))["model"]:
            if state["training"] and state["training"]["state"] in ("failed", "cancelled"):
                raise SystemExit(f"training {state['training']['state']}: {state['training'].get('error')}")
            if time.perf_counter() - t0 > 2.0:
                stream_fps.append(state["fps"])
            time.sleep(0.1)
        train_s = time.perf_counter() - t0
        model = state["model"]
        live: dict[str, collections.Counter] = {}
        for action in actions:
            for actor in HELD_OUT:
                call(base, "POST", "/api/source", {"source": str(clip(root, action, actor))})
                time.sleep(1.5)  # the GRU warms up on the new person
                c = live.setdefault(f"{action}/{actor}", collections.Counter())
                for _ in range(15):
                    c[call(base, "GET", "/api/state")["label"]] += 1
                    time.sleep(0.2)
    finally:
        app.terminate()
        app.wait(timeout=60)
    held = [clip(root, a, actor) for a in actions for actor in HELD_OUT]
    out = work / "infer"
    r = subprocess.run([sys.executable, str(ROOT / "infer.py"), *map(str, held), "-c", model["checkpoint"], "-o", str(out), "--quiet"],
                       cwd=work, capture_output=True, text=True)  # fmt: skip
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    video = {f"{a}/{actor}": json.loads((out / f"{clip(root, a, actor).stem}.json").read_text())["video"]["label"] for a in actions for actor in HELD_OUT}
    readings = sum((c for c in live.values()), collections.Counter())
    right = sum(c[k.split("/")[0]] for k, c in live.items())
    return {
        "actions": actions, "record_s": round(record_s, 1), "train_s": round(train_s, 1), "val_top1": model["val_top1"],
        "unknown": model["unknown"],
        "stream_fps_while_training": {"min": min(stream_fps, default=0), "mean": round(sum(stream_fps) / max(len(stream_fps), 1), 1)},
        "live_right": round(right / sum(readings.values()), 3),
        "live_unknown": round(readings["unknown"] / sum(readings.values()), 3),
        "live_nobody": round(readings["nobody"] / sum(readings.values()), 3),
        "video_top1": round(sum(v == k.split("/")[0] for k, v in video.items()) / len(video), 3),
        "video": video, "live": {k: dict(c) for k, c in live.items()},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "weizmann", help="Weizmann clips, a folder per class")
    p.add_argument("--sets", nargs="+", default=["walk,wave2,jack", "bend,run,skip", "jump,pjump,side"], help="comma-separated action triples")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each recorded clip (default 2)")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "teach.yaml", help="the app's training config")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    a = p.parse_args(argv)
    results = []
    for s in a.sets:
        with tempfile.TemporaryDirectory() as work:
            res = run_set(s.split(","), a.root.resolve(), a.seconds, Path(work), a.config.resolve())
        results.append(res)
        print(f"{s:22s} record {res['record_s']:5.1f} s  train {res['train_s']:5.1f} s  val {res['val_top1']}  held-out live right "
              f"{res['live_right']:.3f} (unknown {res['live_unknown']:.3f}, nobody {res['live_nobody']:.3f})  video_top1 {res['video_top1']:.3f}"
              f"  stream fps while training {res['stream_fps_while_training']}", flush=True)  # fmt: skip
    mean = {k: round(sum(r[k] for r in results) / len(results), 3) for k in ("train_s", "live_right", "video_top1")}
    print(f"mean over {len(results)} sets: train {mean['train_s']} s, held-out live right {mean['live_right']}, video_top1 {mean['video_top1']} "
          f"(cores: {os.cpu_count()})")  # fmt: skip
    if a.out:
        a.out.write_text(json.dumps({"results": results, "mean": mean}, indent=2))


if __name__ == "__main__":
    main()

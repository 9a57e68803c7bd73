"""Archive labelling speed: today's one-process batch against the Lightning job on 1 and N processes.

    python benchmarks/archive.py --checkpoint best.ckpt [--root ../shared/data/weizmann] [--devices 1 2] [--rounds 2]

Each run is the whole ``infer.py`` command as a user types it (start-up, model loading, outputs written)
into a fresh folder, on the same videos; the modes take turns for ``--rounds`` rounds and the median
wall time is kept (a shared machine's speed drifts). Frames are the frames labelled (the index's, or the
JSON outputs' ``processed_frames``); frames/s = frames / wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(mode: str, args: argparse.Namespace, out: Path) -> float:
    cmd = [sys.executable, "infer.py", str(args.root), "-c", str(args.checkpoint), "--output", str(out), "--device", "cpu", "-q", "--no-frames"]
    if mode != "batch":
        cmd += ["--trainer.devices", mode]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {r.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0


def frames(out: Path) -> int:
    return sum(json.loads(p.read_text())["processed_frames"] for p in out.glob("*.json"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--root", type=Path, default=ROOT.parent / "shared/data/weizmann")
    p.add_argument("--devices", nargs="+", default=["1", "2"])
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    modes = ["batch", *args.devices]
    walls: dict[str, list[float]] = {m: [] for m in modes}
    counted: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            for m in modes:
                out = Path(tmp) / f"{m}-{k}"
                walls[m].append(run(m, args, out))
                counted[m] = frames(out)
                print(f"round {k} {m}: {walls[m][-1]:.1f} s", file=sys.stderr)
    n = counted["batch"]
    assert all(c == n for c in counted.values()), counted  # the same frames labelled in every mode
    print(f"{args.root}: {n} frames labelled, median of {args.rounds} rounds, {len(modes)} modes taking turns")
    print(f"{'mode':<28} {'wall s':>7} {'frames/s':>9} {'x batch':>8}")
    base = statistics.median(walls["batch"])
    for m in modes:
        w = statistics.median(walls[m])
        name = "infer.py (one process)" if m == "batch" else f"--trainer.devices {m}"
        print(f"{name:<28} {w:>7.1f} {n / w:>9.1f} {base / w:>7.2f}x")
    print(json.dumps({"frames": n, "wall_s": {m: walls[m] for m in modes}}))


if __name__ == "__main__":
    main()

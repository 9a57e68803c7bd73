"""Does the INT8 extractor keep accuracy? fp32 against INT8, the same checkpoints, the held-out videos of every fold.

    python benchmarks/cross_validate.py --root ../shared/data/weizmann --out runs/cv_weizmann.json
    python benchmarks/int8_accuracy.py --cv runs/cv_weizmann.json --out runs/int8_weizmann.json

For every fold that ``benchmarks/cross_validate.py`` trained (its ``--out`` JSON): the fold's checkpoint is
exported with ``infer.py --export --int8`` (calibrated on that fold's own training videos, as a user's export
is), and the fold's test videos, never seen in calibration, are labelled by the whole file pipeline
(``pipeline.inference.files.analyse_video``: decode, extractor, tracking, GRU steps) twice from that folder:
with its fp32 extractor graph and with its INT8 one, on ``--backend``. Printed per fold and overall:

* video top-1 of each: the main subject's label, an ``unknown`` counting as wrong (as ``infer.py`` labels),
  and of the arg-max of the main subject's mean probabilities (no rejection);
* the videos whose label changed;
* the features on frames of the test videos (``pipeline.inference.quantize.compare``): the share of fp32's
  people the INT8 extractor finds, the cosine of their normalised features, keypoint error in pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.data.features import ExtractorConfig  # noqa: E402
from pipeline.inference.files import analyse_video  # noqa: E402
from pipeline.inference.predictor import ActionPredictor  # noqa: E402
from pipeline.inference.quantize import compare, export_int8, sample_frames  # noqa: E402
from pipeline.inference.runtime import Graph  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def label_videos(predictor: ActionPredictor, videos: list[dict]) -> list[tuple[str, str]]:
    """(label as infer.py gives it, arg-max of the mean probabilities) per video."""
    out = []
    for v in videos:
        r = analyse_video(v["path"], predictor, None, progress=False)
        out.append((r.label, max(r.probs, key=r.probs.get) if r.probs else "nobody"))
    return out


def fold(row: dict, backend: str, frames: int) -> dict:
    report = json.loads(Path(row["report"]).read_text())
    checkpoint = report["checkpoint"]
    videos = [{**v, "path": str((ROOT / v["path"]).resolve())} for v in report["videos"]]
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "export"
        t = time.perf_counter()
        manifest = export_int8(checkpoint, folder, progress=False)
        export_s = time.perf_counter() - t
        int8 = ActionPredictor(folder, device="cpu", backend=backend)
        fp32 = ActionPredictor(folder, device="cpu", backend=backend)
        ex = fp32.extractor  # the same folder's fp32 graph: everything else identical
        ex.graph = Graph(folder, "extractor", backend, torch.get_num_threads(), per_shape=True)
        labels = {"fp32": label_videos(fp32, videos), "int8": label_videos(int8, videos)}
        config = ExtractorConfig.from_record(manifest["extractor"])
        features = compare(folder, manifest, sample_frames([v["path"] for v in videos], config, frames, progress=False))
    truth = [v["label"] for v in videos]
    acc = {
        f"{p}_{k}": float(np.mean([lab[i] == y for lab, y in zip(labels[p], truth)])) for p in labels for i, k in ((0, "top1"), (1, "top1_argmax"))
    }  # fmt: skip
    changed = [f"{Path(v['path']).name}: {a[0]} -> {b[0]}" for v, a, b in zip(videos, labels["fp32"], labels["int8"]) if a[0] != b[0]]
    return {
        "fold": row["fold"], "test": row.get("test"), "videos": len(videos), **acc, "changed": changed,
        "features": {k: round(v, 4) for k, v in features.items()}, "calibration": manifest["int8"]["calibration"],
        "export_s": round(export_s, 1),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cv", required=True, help="benchmarks/cross_validate.py's --out JSON (its folds' reports and checkpoints)")
    p.add_argument("--backend", default="openvino", choices=("onnxruntime", "openvino"))
    p.add_argument("--frames", type=int, default=200, help="frames of the test videos for the feature comparison, per fold")
    p.add_argument("--out", default="runs/int8_accuracy.json")
    a = p.parse_args(argv)
    cv = json.loads(Path(a.cv).read_text())
    t0 = time.perf_counter()
    rows = []
    for row in cv["folds"]:
        r = fold(row, a.backend, a.frames)
        f = r["features"]
        print(f"fold {r['fold']} ({r['test']}): video top-1 fp32 {r['fp32_top1']:.3f} int8 {r['int8_top1']:.3f} | arg-max fp32 "
              f"{r['fp32_top1_argmax']:.3f} int8 {r['int8_top1_argmax']:.3f} | people found {f['people_found']:.3f}, cosine median "
              f"{f['feature_cosine_median']:.3f} p10 {f['feature_cosine_p10']:.3f}, keypoints {f['keypoint_px_median']:.2f} px median "
              f"{f['keypoint_px_p95']:.2f} p95 | changed: {', '.join(r['changed']) or 'none'}", flush=True)  # fmt: skip
        rows.append(r)
    n = sum(r["videos"] for r in rows)
    overall = {k: sum(r[k] * r["videos"] for r in rows) / n for k in ("fp32_top1", "int8_top1", "fp32_top1_argmax", "int8_top1_argmax")}
    folds = {k: float(np.mean([r[k] for r in rows])) for k in overall}
    print(f"\n{len(rows)} folds, {n} test videos, {a.backend}: video top-1 fp32 {overall['fp32_top1']:.3f}, int8 {overall['int8_top1']:.3f} "
          f"({100 * (overall['int8_top1'] - overall['fp32_top1']):+.1f} points); arg-max fp32 {overall['fp32_top1_argmax']:.3f}, int8 "
          f"{overall['int8_top1_argmax']:.3f}; mean over folds fp32 {folds['fp32_top1']:.3f}, int8 {folds['int8_top1']:.3f}; "
          f"{sum(len(r['changed']) for r in rows)} labels changed; {time.perf_counter() - t0:.0f} s")  # fmt: skip
    summary = {"cv": a.cv, "backend": a.backend, "folds": rows, "overall": overall, "mean_over_folds": folds, "seconds": round(time.perf_counter() - t0)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()

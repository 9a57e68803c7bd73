"""Real clips, real weights: the whole training path on a Weizmann subset (3 classes, held-out actor)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REAL_WEIGHTS, WEIZMANN, needs_shared, run_infer, run_script

CLASSES = ("bend", "jack", "walk")
pytestmark = [needs_shared, pytest.mark.slow]


@pytest.fixture(scope="module")
def weizmann3(tmp_path_factory) -> tuple[Path, Path]:
    """Three Weizmann classes (linked, not copied) and a definition that splits by actor."""
    tmp = tmp_path_factory.mktemp("weizmann3")
    root = tmp / "data"
    root.mkdir()
    for c in CLASSES:
        (root / c).symlink_to(WEIZMANN / c, target_is_directory=True)
    definition = tmp / "weizmann3.yaml"
    definition.write_text(f"name: weizmann3\nlayout: folders\nclasses: [{', '.join(CLASSES)}]\ngroup_pattern: '^([^_]+)_'\n")
    return root, definition


def test_fit_on_real_clips_recognises_the_held_out_actor(weizmann3, tmp_path):
    root, definition = weizmann3
    logger = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "runs")}}])
    r = run_script(
        "train.py", "fit", "--config", "configs/weizmann.yaml",
        "--data.dataset", str(definition), "--data.root", str(root), "--data.cache_dir", str(tmp_path / "cache"),
        "--data.extractor.weights", str(REAL_WEIGHTS), "--data.extractor.imgsz", "256", "--data.extractor.fps", "12.5",
        "--data.clip_len", "16", "--data.eval_window", "16", "--data.eval_stride", "8",
        "--trainer.max_epochs", "60", "--trainer.logger", logger,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    report = Path(next(ln for ln in r.stdout.splitlines() if ln.startswith("report:")).split(":", 1)[1].strip())
    rep = json.loads(report.read_text())
    assert rep["split"]["fold"] == 0 and len(rep["videos"]) == 3  # one held-out actor, one clip per class
    assert rep["metrics"]["test/video_top1"] == 1.0, rep["videos"]
    assert rep["metrics"]["test/clip_top1"] >= 0.9
    extractor = json.loads(next((tmp_path / "cache").glob("*/extractor.json")).read_text())
    assert extractor["weights_sha256"] == "869e83fcdffdc7371fa4e34cd8e51c838cc729571d1635e5141e3075e9319dc0"

    # infer.py on the held-out actor's clips: decoding, extraction and GRU streaming give what test gave
    ckpt = Path(next(ln for ln in r.stdout.splitlines() if ln.startswith("checkpoint:")).split(":", 1)[1].strip())
    held_out = [v["path"] for v in rep["videos"]]
    i = run_script("infer.py", *held_out, "-c", str(ckpt), "--output", str(tmp_path / "infer"), "--quiet")
    assert i.returncode == 0, i.stderr[-3000:]
    for v in rep["videos"]:
        doc = json.loads((tmp_path / "infer" / f"{Path(v['path']).stem}.json").read_text())
        assert doc["video"]["label"] == v["predicted"] == v["label"]
        assert abs(doc["video"]["probs"][v["predicted"]] - v["score"]) < 1e-3  # the same mean probability
        assert doc["fps"] == 12.5 and doc["processed_frames"] < doc["frame_count"]  # sampled as in training

    # exported with an INT8 extractor, calibrated on the checkpoint's own training clips (never the held-out actor's)
    import numpy as np
    import torch

    listed = torch.load(ckpt, map_location="cpu", weights_only=True)["train_videos"]
    assert len(listed) >= 3 and not {str(Path(p).resolve()) for p in held_out} & set(listed)
    # infer.py runs in this process from here on (run_infer): the run above started one as a user does, each start is 5 s
    code, _, err = run_infer("--export", str(tmp_path / "int8"), "-c", str(ckpt), "--int8", "--calibration-frames", "64", "--quiet")
    assert code == 0, err[-3000:]
    manifest = json.loads((tmp_path / "int8" / "export.json").read_text())
    check = manifest["int8"]["check"]
    assert check["people_found"] >= 0.95 and check["feature_cosine_median"] >= 0.95 and check["keypoint_share_median"] <= 0.03, check
    # the fp32 export is whole inside it: without the INT8 graph and its record it is the fp32 export (one export
    # of the real model, not two, for the suite's time; `infer.py --export` alone: tests/test_infer.py)
    fp32 = shutil.copytree(tmp_path / "int8", tmp_path / "exported", ignore=shutil.ignore_patterns("extractor_int8*"))
    graphs = [g for g in manifest["graphs"] if g != "extractor_int8"]
    plain = {k: v for k, v in manifest.items() if k != "int8"}
    (fp32 / "export.json").write_text(json.dumps({**plain, "precision": "fp32", "graphs": graphs}))

    # fp32 graphs (ONNX Runtime, OpenVINO IR): the same clips give the same tracks, labels and probabilities
    for backend in ("onnxruntime", "openvino"):
        code, _, err = run_infer(*held_out, "-c", str(fp32), "--backend", backend, "--output", str(tmp_path / backend), "--quiet")
        assert code == 0, err[-3000:]
        for v in rep["videos"]:
            stem = Path(v["path"]).stem
            want = (tmp_path / "infer" / f"{stem}.csv").read_text().splitlines()[1:]
            got = (tmp_path / backend / f"{stem}.csv").read_text().splitlines()[1:]
            assert len(got) == len(want) > 10
            for g, w in zip(got, want):
                g, w = g.split(","), w.split(",")
                assert g[:4] == w[:4] and max(abs(float(x) - float(y)) for x, y in zip(g[4:], w[4:])) < 1e-3, (backend, g, w)
            assert json.loads((tmp_path / backend / f"{stem}.json").read_text())["video"]["label"] == v["label"]

    # the INT8 extractor: the same labels
    for backend in ("onnxruntime", "openvino"):
        code, _, err = run_infer(*held_out, "-c", str(tmp_path / "int8"), "--backend", backend, "--output", str(tmp_path / f"{backend}8"), "--quiet")
        assert code == 0, err[-3000:]
        for v in rep["videos"]:
            assert json.loads((tmp_path / f"{backend}8" / f"{Path(v['path']).stem}.json").read_text())["video"]["label"] == v["label"], backend

    # the explicit GRU cell reproduces the trained nn.GRU on the real cached features

    from pipeline.inference.predictor import ActionPredictor
    from pipeline.model.gates import ExplicitGRU

    model = ActionPredictor(ckpt, device="cpu").model
    with torch.inference_mode():
        for entry in sorted((tmp_path / "cache").glob("*/*.npz"))[:5]:
            z = model.embed(torch.from_numpy(np.load(entry)["features"])[None])
            out, h = model.rnn(z)
            out2, h2, _ = ExplicitGRU(model.rnn)(z)
            assert (out - out2).abs().max() < 1e-5 and (h - h2).abs().max() < 1e-5

"""Shared fixtures: small synthetic clips made on the fly, a random-init model, and the real inputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ACTIONS_SHARED", ROOT.parent / "shared"))  # the GPU check points it elsewhere
REAL_WEIGHTS = SHARED / "weights" / "yolo11n-pose.pt"
WEIZMANN = SHARED / "data" / "weizmann"
TINY_MODEL = "yolo11n-pose.yaml"  # random init: fast, no file needed; never used for accuracy

needs_shared = pytest.mark.skipif(
    not (REAL_WEIGHTS.is_file() and WEIZMANN.is_dir()),
    reason=f"real weights and Weizmann clips not found under {SHARED} (see ../shared/README.md)",
)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n 2``, the README's command) each worker, and each process its tests start, has
    one thread for torch and NumPy: the workers share the cores instead of each taking all of them."""
    if getattr(config.option, "numprocesses", None):  # set before the workers start: they inherit it
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(var, "1")


def write_clip(path: Path, frames: int = 16, size: tuple[int, int] = (80, 64), fps: float = 25.0, seed: int = 0, speed: float = 2.0) -> Path:
    """A clip of a stick figure walking across a textured background (MJPG .avi)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    rng = np.random.default_rng(seed)
    bg = rng.integers(60, 200, (h, w, 3), dtype=np.uint8)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert out.isOpened()
    for t in range(frames):
        img = bg.copy()
        x = int(10 + speed * t) % (w - 10)
        cv2.circle(img, (x, h // 4), 4, (30, 30, 30), -1)
        cv2.line(img, (x, h // 4), (x, h // 2 + 6), (30, 30, 30), 2)
        swing = int(6 * np.sin(t * 0.8 + seed))
        cv2.line(img, (x, h // 2 + 6), (x + swing, h - 6), (30, 30, 30), 2)
        cv2.line(img, (x, h // 2 + 6), (x - swing, h - 6), (30, 30, 30), 2)
        out.write(img)
    out.release()
    return path


def write_raw_avi(path: Path, frames: int = 12, size: tuple[int, int] = (80, 64)) -> Path:
    """An uncompressed, bottom-up 24-bit AVI (a valid file that crashes OpenCV's reader in native code).
    Frame t is a flat grey of value 10 * t, so its content can be checked."""
    import av

    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("rawvideo", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "bgr24"
        for t in range(frames):
            for packet in s.encode(av.VideoFrame.from_ndarray(np.full((h, w, 3), 10 * t, np.uint8), format="bgr24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    data = bytearray(path.read_bytes())
    at = data.index(b"strf") + 8  # BITMAPINFOHEADER: a positive height means rows stored bottom-up
    data[at + 8 : at + 12] = h.to_bytes(4, "little", signed=True)
    path.write_bytes(bytes(data))
    return path


def make_dataset(root: Path, classes=("wave", "walk"), actors=("ann", "bob", "cid", "dan"), frames: int = 14) -> Path:
    """Folder per class, files ``<actor>_<class>.avi``: the Weizmann layout in miniature."""
    for ci, c in enumerate(classes):
        for ai, a in enumerate(actors):
            write_clip(root / c / f"{a}_{c}.avi", frames=frames + ai, seed=ci * 10 + ai, speed=1.0 + 2 * ci)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "toy")


@pytest.fixture
def toy_definition(tmp_path) -> Path:
    """A dataset definition YAML for the toy layout (actor before '_')."""
    p = tmp_path / "toy.yaml"
    p.write_text("name: toy\nlayout: folders\nclasses: [wave, walk]\ngroup_pattern: '^([^_]+)_'\n")
    return p


def run_script(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a repo script as a user would, capturing its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def run_infer(*args: str) -> tuple[int, str, str]:
    """``infer.py`` run in this process as a user runs it (``__main__``): exit code, stdout, stderr. A process
    start less (5 s of imports), and what the run calls can be patched (``graphs_from``)."""
    import contextlib
    import io
    import runpy
    import signal

    code, out, err, argv = 0, io.StringIO(), io.StringIO(), sys.argv
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # run_cli leaves its own
    try:
        sys.argv = ["infer.py", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(ROOT / "infer.py"), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
        for sig, handler in handlers.items():  # a Ctrl-C later in the suite is pytest's, not an instant exit
            signal.signal(sig, handler)
    return code, out.getvalue(), err.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_url(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until ``url`` answers (the server loads its model first); fails at once if ``proc`` has exited."""
    import time
    import urllib.request

    end = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            assert proc.poll() is None, f"the server exited: {proc.communicate()[0]}"
            assert time.monotonic() < end, f"{url} did not answer in {timeout} s"
            time.sleep(0.1)


def seeing_weights(path: Path, bias: float = 8.0) -> Path:
    """The random-init test model with its person score raised, saved as an Ultralytics ``.pt`` file, so
    that it "sees" people on any frame (bias 8: one steady person per synthetic clip; 11: a crowd).
    Fast and deterministic; it says nothing about accuracy."""
    import torch

    from pipeline.data.weights import load_pose_model

    if not path.is_file():
        model, _ = load_pose_model(TINY_MODEL)
        for branch in model.model[-1].cv3:
            branch[-1].bias.data[0] += bias
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model, "train_args": {}}, path)
    return path


def make_checkpoint(
    path: Path, class_names=("walk", "wave"), fps: float | None = None, layers=(16,), cell: str = "gru", seed: int = 0, weights: str | None = None,
    imgsz: int = 64, rejection: dict | None = None, bias: dict[str, float] | None = None, novelty=None, probe_share: float = 0.0,
    velocity: bool = False,
) -> Path:
    """A checkpoint as ``train.py`` writes it, for a random-init extractor that sees one person per frame
    (``seeing_weights``) and an untrained classifier with non-trivial normalisation statistics: fast, and
    enough to test everything but accuracy."""
    import torch

    from pipeline.data.extract import extractor_record
    from pipeline.data.features import ExtractorConfig, FeatureExtractor
    from pipeline.model.classifier import ActionClassifier

    weights = weights or str(seeing_weights(path.parent / "tiny-person.pt"))
    record = extractor_record(FeatureExtractor(ExtractorConfig(weights=weights, imgsz=imgsz, layers=tuple(layers), fps=fps)))
    torch.manual_seed(seed)
    clf = ActionClassifier(record["feature_dim"], list(class_names), record, cell=cell, velocity=velocity)
    mean, std = torch.randn(record["feature_dim"]) * 0.1, torch.rand(record["feature_dim"]) + 0.5
    for stream in clf.streams.values():
        stream.set_normalization(mean, std)
        for name, value in (bias or {}).items():  # make the untrained model favour a class
            stream.head[-1].bias.data[list(class_names).index(name)] += value
        if probe_share:  # a frame probe fused in, as if fitted and chosen on validation
            stream.probe_weight.normal_(0, 0.5)
            stream.share = probe_share
    if rejection is not None:  # as if fitted on a validation split
        clf.rejection = rejection
    if novelty is not None:  # pipeline.model.novelty.Novelty, as if fitted on training and validation
        clf.novelty = novelty
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": dict(clf.hparams), "state_dict": clf.state_dict(), "pytorch-lightning_version": "2"}, path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint) -> Path:
    """``tiny.export`` beside the session's checkpoint, as ``infer.py --backend`` makes it on first use: one
    export (half a minute of the suite's time) for every test that needs one of a plain checkpoint."""
    from pipeline.inference.export import cached_export

    return cached_export(tiny_checkpoint)


CROWD = {"layers": (16, 19), "imgsz": 96}  # the crowd-seeing extractor of tests/test_export.py and tests/test_quantize.py


@pytest.fixture(scope="session")
def crowd_export(tmp_path_factory) -> tuple[Path, Path]:
    """A checkpoint of a crowd-seeing random extractor (pooled layers, an untrained GRU) and its export: the
    extractor traced once (half a minute), its graphs taken by the tests that export the same extractor."""
    from pipeline.inference.export import export

    tmp = tmp_path_factory.mktemp("crowd")
    ckpt = make_checkpoint(tmp / "crowd.ckpt", weights=str(seeing_weights(tmp / "crowd.pt", bias=11)), **CROWD)
    export(ckpt, tmp / "exported")
    return ckpt, tmp / "exported"


def graphs_from(folder: Path, monkeypatch: pytest.MonkeyPatch, keep: tuple[str, ...] = ()) -> None:
    """Let ``export`` take each ONNX graph from ``folder``, an export of the same weights made earlier in the
    session, instead of tracing it again (half a minute an export); the graphs named in ``keep`` are still
    traced. Everything else an export does (checks, manifest, OpenVINO IR, the folder's atomic write) runs
    as it does for a user, and a graph of other weights would fail the tests that compare it with PyTorch."""
    import shutil

    from pipeline.inference import export

    traced = export._onnx

    def copy(module, args, path: Path, *rest) -> None:
        if path.name in keep:
            traced(module, args, path, *rest)
        else:
            shutil.copyfile(folder / path.name, path)

    monkeypatch.setattr(export, "_onnx", copy)

"""Checkpoint -> deployable files: both stages as ONNX (and OpenVINO IR when ``openvino`` is installed).

A folder holds what ``pipeline.inference.runtime`` needs to run without the PyTorch checkpoint or the YOLO ``.pt``:

* ``extractor.onnx``: letterboxed uint8 BGR frames (B, H, W, 3), any batch, H and W multiples of 32 ->
  the person logits of each head level and the layer outputs that the head and the pooling read. Every
  convolution of the pass is in it.
* ``branches{i}.onnx``: the head's box and keypoint branches of level ``i`` on 5x5 patches of its input
  (N, C, 5, 5) -> box distances (N, 4) and raw keypoints (N, 51): run at the few candidate anchors only,
  as the PyTorch extractor does (``features.find_people``).
* ``step.onnx``: one recurrent step over a batch of tracks with the state explicit: features (N, D),
  state (layers, N, hidden) -> class probabilities (N, C), next state (LSTM: ``h`` and ``c``). The
  normalisation is inside.
* ``export.json``: class names, fps, extractor record (settings, weights identity), normalisation,
  rejection threshold, background class, the graphs' names, the checkpoint's sha256.
* ``novelty.pt``: the rules that read a frame as ``unknown`` (``pipeline.model.novelty``; plain tensors),
  when the checkpoint has them.
* ``*.xml`` / ``*.bin``: the same graphs as OpenVINO IR, when ``openvino`` is installed.

The cheap, data-dependent rest (which anchors are candidates, NMS, pooling in each person's box) is the
same Python code for every backend (``pipeline.data.features``), so the features cannot differ between them.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pipeline.data.features import FeatureExtractor
from pipeline.data.weights import sha256_file
from pipeline.errors import UserError
from pipeline.model.checkpoint import CheckpointError
from pipeline.model.rnn import ActionRNN

EXPORT_VERSION = 1
MANIFEST = "export.json"
NOVELTY = "novelty.pt"
OPSET = 18  # the dynamo exporter's lowest (ONNX Runtime >= 1.14 and OpenVINO read it)
EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}  # the pip extra that installs each runtime


class ExportError(UserError, RuntimeError):
    """An exported folder that is missing, incomplete or from another version, or a model that cannot be exported."""


def runtime_module(backend: str):
    """The runtime's package, or a one-line error naming the extra that installs it.

    OpenVINO is imported without its model-conversion tools (``openvino.tools.ovc``, not needed to read and
    write IR): importing them sends usage telemetry from a forked process, which writes a client id under
    ``~/intel`` and, forked from a process with PyTorch's threads and no network, can hang its exit."""
    try:
        if backend != "openvino" or "openvino" in sys.modules:
            return importlib.import_module(backend)
        sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment]  # openvino's __init__ skips it then
        try:
            return importlib.import_module(backend)
        finally:
            del sys.modules["openvino.tools.ovc"]  # a later explicit import still works
    except ImportError:
        raise ExportError(f"backend {backend} is not installed: pip install -e \".[{EXTRAS[backend]}]\" (or pip install {backend})") from None


class _Pass(nn.Module):
    """The extractor's convolutions, from uint8 frames: person logits per level, then the kept layer outputs."""

    def __init__(self, extractor: FeatureExtractor, outputs: list[int]):
        super().__init__()
        self.extractor, self.outputs = extractor, outputs

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = frames.permute(0, 3, 1, 2).to(self.extractor.dtype)  # the 1 / 255 of preprocess is in the first convolution
        maps, feats = self.extractor._body(x)
        return (*self.extractor.person_logits(feats), *(maps[i] for i in self.outputs))


class _Branches(nn.Module):
    """The head's box and keypoint branches of one level at patch centres."""

    def __init__(self, extractor: FeatureExtractor, level: int):
        super().__init__()
        self.extractor, self.level = extractor, level

    def forward(self, patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.extractor.branches({self.level: patch})[self.level]


class _Step(nn.Module):
    """One recurrent step with the state as input and output, probabilities out."""

    def __init__(self, model: ActionRNN, lstm: bool):
        super().__init__()
        self.model, self.lstm = model, lstm

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, new = self.model(x[:, None], hidden=tuple(state) if self.lstm else state[0])
        return (logits[:, 0].softmax(-1), *(new if self.lstm else (new,)))


def _onnx(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: tuple) -> None:
    """Export ``module`` with PyTorch's ``torch.export`` (dynamo) exporter, constants folded by onnxscript's
    optimiser; ``dynamic`` holds each argument's dynamic axes as a list (a tuple of lists for ``*state``)."""
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.export's own notes on its internals, nothing the user can act on
        program = torch.onnx.export(
            module.eval(), args, input_names=inputs, output_names=outputs, dynamic_shapes=_dims(dynamic),
            opset_version=OPSET, dynamo=True, external_data=False, optimize=True, verbose=False, report=False,
        )  # fmt: skip
    program.save(str(path))


def _dims(axes: tuple) -> tuple:
    """Each argument's dynamic axes (a list) as ``torch.export``'s dynamic shapes: ``{axis: Dim.DYNAMIC}``."""
    return tuple(_dims(a) if isinstance(a, tuple) else {i: torch.export.Dim.DYNAMIC for i in a} for a in axes)


def _openvino(folder: Path, names: list[str]) -> bool:
    """Convert each ONNX graph to OpenVINO IR when ``openvino`` is installed; whether it was."""
    try:
        ov = runtime_module("openvino")
    except ExportError:
        return False
    core = ov.Core()
    for name in names:
        # weights kept in fp32 (save_model halves them by default, which moves probabilities by ~1e-3)
        ov.save_model(core.read_model(folder / f"{name}.onnx"), folder / f"{name}.xml", compress_to_fp16=False)
    return True


def _built_with() -> dict:
    """What wrote the folder: the exporter, the opset and the packages' versions (the manifest's record)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"exporter": "torch.onnx (dynamo)", "opset": OPSET}
    for name in ("torch", "onnx", "onnxscript", "ultralytics", "openvino"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def export(
    checkpoint: str | Path, folder: str | Path, weights: str | None = None, extra: Callable[[Path, dict], None] | None = None,
) -> dict:  # fmt: skip
    """Write the exported models of ``checkpoint`` into ``folder`` (replaced atomically); the manifest.

    ``extra(folder, manifest)``: more graphs written into the export in progress, recorded in its manifest
    (``pipeline.inference.quantize.export_int8``'s INT8 extractor). When it raises ExportError the fp32
    export is still written and an ExportError says so."""
    from pipeline.inference.torch_backend import load_torch  # the same loading, and checks, as inference

    try:
        import onnx  # noqa: F401 - PyTorch's exporter writes through it
    except ImportError:
        raise ExportError('exporting needs the onnx package: pip install -e ".[onnx]" (or pip install onnx onnxruntime)') from None
    folder = Path(folder)
    if folder.exists() and not (folder / MANIFEST).is_file() and (not folder.is_dir() or any(folder.iterdir())):
        raise ExportError(f"{folder} exists and is not an exported folder: give a new or empty folder (an old export is replaced)")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot write {folder}: {e.strerror}") from None
    t0 = time.perf_counter()
    failed = None
    parts = load_torch(checkpoint, device="cpu", half=False, weights=weights)
    extractor, model = parts.extractor, parts.model
    if not extractor._fast_head:
        raise ExportError(f"export supports the classic YOLO pose head (yolo11/yolov8 -pose); {parts.record.get('weights_name')} has {type(extractor.head).__name__}")
    if parts.cell not in ("gru", "lstm", "rnn"):
        raise ExportError(f"cannot export cell '{parts.cell}'")
    head = extractor.head
    outputs = sorted(set(head.f) | set(extractor.layers))
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as e:
        raise ExportError(f"cannot write {folder}: {e.strerror}") from None
    try:
        frames = torch.zeros(1, 64, 96, 3, dtype=torch.uint8)
        first = extractor.model.model[0].conv  # the extractor is this export's own copy
        first.weight.data /= 255  # a pass less over every input pixel (3% of the graph's time)
        _onnx(
            _Pass(extractor, outputs), (frames,), tmp / "extractor.onnx", ["frames"],
            [f"person{i}" for i in range(len(head.f))] + [f"layer{j}" for j in outputs],
            ([0, 1, 2],),
        )  # fmt: skip
        first.weight.data *= 255
        with torch.inference_mode():
            _, feats = extractor._body(torch.zeros(1, 3, 64, 64))
        for i, f in enumerate(feats):
            _onnx(
                _Branches(extractor, i), (torch.zeros(2, f.shape[1], 5, 5),), tmp / f"branches{i}.onnx", ["patch"],
                ["box", "keypoints"], ([0],),
            )  # fmt: skip
        (layers, width), lstm = model.state_shape, parts.cell == "lstm"
        state = ["h", "c"] if lstm else ["h"]
        zeros = [torch.zeros(layers, 2, width) for _ in state]
        _onnx(
            _Step(model, lstm), (torch.zeros(2, extractor.feature_dim), *zeros), tmp / "step.onnx", ["features", *state],
            ["probs", *(f"{s}_next" for s in state)],
            ([0], tuple([1] for _ in state)),
        )  # fmt: skip
        graphs = ["extractor", *(f"branches{i}" for i in range(len(feats))), "step"]
        if parts.novelty:
            torch.save(parts.novelty.state(), tmp / NOVELTY)
        manifest = {
            "export_version": EXPORT_VERSION,
            "checkpoint": Path(checkpoint).name,
            "checkpoint_sha256": sha256_file(checkpoint),
            "class_names": parts.class_names,
            "fps": extractor.config.fps,
            "extractor": parts.record,
            "strides": extractor.strides,
            "layer_outputs": outputs,
            "levels": [f"layer{j}" for j in head.f],
            "pooled": [f"layer{j}" for j in extractor.layers],
            "normalisation": {"mean": model.mean.tolist(), "std": model.std.tolist(), "applied": "inside step.onnx"},
            "rejection": parts.rejection,
            "novelty": NOVELTY if parts.novelty else None,
            "background": parts.background,
            "warmup_frames": parts.warmup_frames,
            "cell": parts.cell,
            "state": {"names": state, "layers": layers, "hidden": width},
            "graphs": graphs,
            "openvino": _openvino(tmp, graphs),
            "built_with": _built_with(),
            "precision": "fp32",
        }
        if extra is not None:
            try:
                extra(tmp, manifest)
            except ExportError as e:
                failed = e
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if folder.exists():
            shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if failed is not None:
        raise ExportError(f"{failed}; the fp32 export is written in {folder}")
    manifest["seconds"] = time.perf_counter() - t0
    return manifest


def read_manifest(folder: str | Path) -> dict:
    """The manifest of an exported folder, after checking that every graph it names is there."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ExportError(
            f"{folder}: a folder without {MANIFEST}: -c takes a checkpoint file written by train.py or a folder written by "
            "'infer.py --export', and this is neither"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: unreadable ({e}); export the checkpoint again") from None
    if manifest.get("export_version") != EXPORT_VERSION:
        raise ExportError(f"{folder}: exported by another version ({manifest.get('export_version')}, this one reads {EXPORT_VERSION}); export the checkpoint again")
    missing = [g for g in manifest["graphs"] if not (folder / f"{g}.onnx").is_file()]
    if missing:
        raise ExportError(f"{folder}: {', '.join(missing)}.onnx missing; export the checkpoint again")
    return manifest


def cached_export(checkpoint: str | Path, weights: str | None = None) -> Path:
    """The exported folder of ``checkpoint`` beside it (``best.ckpt`` -> ``best.export/``), made when missing
    or made from another checkpoint; in a temporary folder when the checkpoint's folder is read-only."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint {checkpoint} not found")
    folder = checkpoint.with_suffix(".export")
    try:
        if read_manifest(folder)["checkpoint_sha256"] == sha256_file(checkpoint):
            return folder
    except ExportError:
        pass
    if not os.access(folder.parent, os.W_OK):
        folder = Path(tempfile.mkdtemp(prefix="actions-export-")) / folder.name
    export(checkpoint, folder, weights)
    return folder

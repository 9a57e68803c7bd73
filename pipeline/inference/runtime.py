"""Exported graphs -> the predictor's parts: ONNX Runtime and OpenVINO backends.

An exported folder (``pipeline.inference.export``) runs without the PyTorch checkpoint or the YOLO ``.pt``: the
graphs hold the convolutions and the recurrent step; choosing candidates, NMS, pooling in each person's
box and the tracker stay the same Python code as with PyTorch (``pipeline.data.features``), on the CPU. Either
runtime is an optional extra (``pip install -e ".[onnx]"`` / ``".[openvino]"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.data.features import Detections, ExtractorConfig, find_people, finish, letterbox, padded_batch
from pipeline.data.weights import WeightsIdentity
from pipeline.inference.export import ExportError, cached_export, read_manifest, runtime_module
from pipeline.inference.parts import Parts
from pipeline.model.novelty import Novelty
from pipeline.options import MAX_PEOPLE, OptionError

CPU = ("CPUExecutionProvider",)
GPU = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # in ONNX Runtime's order of preference


class Graph:
    """One exported graph on one runtime: ``graph(*arrays)`` -> its outputs as numpy arrays, in order.

    OpenVINO compiles the extractor's graph once per input shape (a fixed shape runs faster than a dynamic
    one). A video has one frame size, but its last batch is short, and every video's is another length: each
    length compiled anew cost a second or two per video (the benchmark's first round ran at a third of the
    speed). So a batch runs padded with blank pictures to the next power of two (``padded_batch``), as on a
    GPU: at most five batch sizes per frame size (1 to 16, at the default --batch-size) are ever compiled, and the padding's outputs are
    dropped (each picture goes through the layers alone)."""

    def __init__(self, folder: Path, name: str, backend: str, threads: int, per_shape: bool = False, providers: tuple[str, ...] = CPU):
        self.backend, self.per_shape = backend, per_shape
        rt = runtime_module(backend)
        path = folder / f"{name}.xml" if backend == "openvino" and (folder / f"{name}.xml").is_file() else folder / f"{name}.onnx"
        self.path = path
        try:
            if backend == "onnxruntime":
                opts = rt.SessionOptions()
                opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
                opts.log_severity_level = 3
                # idle threads sleep instead of spinning: they would take the cores from PyTorch's post-processing,
                # the decoding thread and the other graphs between two runs
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                self.session = _session(rt, path, opts, providers)
                self.inputs = [i.name for i in self.session.get_inputs()]
            else:
                self.core = rt.Core()
                self.model = self.core.read_model(path)
                self.compiled: dict[tuple, object] = {}
                self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}
                if not per_shape:
                    self._compiled(())
        except Exception as e:  # noqa: BLE001 - the runtimes raise their own types for a damaged file
            raise self._unreadable(e) from None

    def _unreadable(self, e: Exception) -> ExportError:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
        return ExportError(f"{self.path}: {self.backend} cannot read it ({reason}); export the checkpoint again")

    def _compiled(self, arrays: tuple[np.ndarray, ...]):
        key = tuple(a.shape for a in arrays) if self.per_shape else ()
        if key in self.compiled:
            self.compiled[key] = self.compiled.pop(key)  # the most recently used last
        else:
            if len(self.compiled) >= 8:  # a long batch job over many frame sizes: keep the most recently used few
                self.compiled.pop(next(iter(self.compiled)))
            model = self.model.clone()
            if self.per_shape:
                model.reshape({p.get_any_name(): list(a.shape) for p, a in zip(model.inputs, arrays)})
            try:
                self.compiled[key] = self.core.compile_model(model, "CPU", self.config)
            except Exception as e:  # noqa: BLE001
                raise self._unreadable(e) from None
        return self.compiled[key]

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        if self.backend == "onnxruntime":
            return self.session.run(None, dict(zip(self.inputs, arrays)))
        b = len(arrays[0]) if self.per_shape else 0
        if b and padded_batch(b) != b:
            arrays = tuple(np.concatenate([a, np.zeros((padded_batch(b) - b, *a.shape[1:]), a.dtype)]) for a in arrays)
        compiled = self._compiled(arrays)
        result = compiled(list(arrays))
        return [result[o][:b] if b else result[o] for o in compiled.outputs]


def gpu_providers(device: str) -> tuple[str, ...]:
    """ONNX Runtime's providers for the extractor's graph on ``device``: TensorRT and CUDA where this
    onnxruntime has them and a GPU is asked for (``auto``: where torch sees one), else the CPU's. ``cuda``
    without a CUDA build of onnxruntime is a one-line error."""
    if device == "cpu":
        return CPU
    have = runtime_module("onnxruntime").get_available_providers()
    gpu = tuple(p for p in GPU if p in have)
    if device != "auto" and not gpu:
        raise ExportError(f"onnxruntime here has no CUDA provider (it offers {', '.join(have)}): pip install onnxruntime-gpu, or use --device cpu or --backend torch")
    return gpu + CPU if gpu and (device != "auto" or torch.cuda.is_available()) else CPU


def _session(rt, path: Path, opts, providers: tuple[str, ...]):
    """An InferenceSession on the first of ``providers`` that loads (TensorRT needs its own libraries;
    without them ONNX Runtime fails or falls back by itself), the CPU last."""
    for k in range(len(providers) - 1):
        try:
            return rt.InferenceSession(str(path), opts, providers=list(providers[k:]))
        except Exception:  # noqa: BLE001 - a provider that cannot load: try the next one
            pass
    return rt.InferenceSession(str(path), opts, providers=list(providers[-1:]))


class ExportedExtractor:
    """The extractor from exported graphs: uint8 BGR frames (B, H, W, 3) -> :class:`Detections`, as
    :class:`~pipeline.data.features.FeatureExtractor` gives them (on the CPU)."""

    def __init__(
        self, folder: Path, manifest: dict, backend: str, threads: int, max_people: int = MAX_PEOPLE, providers: tuple[str, ...] = CPU,
        graph: str = "extractor",
    ):  # fmt: skip
        if max_people < 1:
            raise OptionError(f"max_people must be at least 1, got {max_people}")
        record = manifest["extractor"]
        self.config = ExtractorConfig.from_record(record)
        self.identity = WeightsIdentity(record["weights_name"], record["weights_sha256"])
        self.feature_dim: int = record["feature_dim"]
        self.max_people = max_people
        self.device = torch.device("cpu")
        self.strides: list[float] = manifest["strides"]
        outputs = [f"layer{j}" for j in manifest["layer_outputs"]]
        self._names = [f"person{i}" for i in range(len(manifest["levels"]))] + outputs
        self._levels, self._pooled = manifest["levels"], manifest["pooled"]
        self.graph = Graph(folder, graph, backend, threads, per_shape=True, providers=providers)  # the convolutions: on a GPU when there is one
        # a few dozen patches: one thread, no pool to wake (measured faster than two)
        self.heads = [Graph(folder, f"branches{i}", backend, 1) for i in range(len(manifest["levels"]))]

    def branches(self, patches: dict[int, torch.Tensor]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        out = {}
        for i, p in patches.items():
            box, kpt = self.heads[i](p.numpy())
            out[i] = torch.from_numpy(box), torch.from_numpy(kpt)
        return out

    def __call__(self, frames: torch.Tensor | np.ndarray) -> Detections:
        frames = frames.cpu() if torch.is_tensor(frames) else frames
        x, r, left, top = letterbox(frames, self.config.input_size(*frames.shape[1:3]))
        out = dict(zip(self._names, (torch.from_numpy(a) for a in self.graph(x.numpy()))))
        levels = [out[f"person{i}"] for i in range(len(self._levels))]
        found = find_people(levels, [out[n] for n in self._levels], self.branches, self.strides, self.max_people)
        return finish(found, [out[n] for n in self._pooled], self.config.pool, self.max_people, (x.shape[1], r, left, top), frames.shape[1:3])


def load_exported(source: str | Path, backend: str = "auto", device: str = "auto", weights: str | None = None, max_people: int = MAX_PEOPLE) -> Parts:
    """Predictor parts from an exported folder (its INT8 extractor when it has one), or from a checkpoint
    exported beside it first."""
    source = Path(source)
    if backend == "torch":
        raise ExportError(f"{source} is an exported folder, without PyTorch weights: use --backend onnxruntime or openvino, or the checkpoint with torch")
    if backend == "auto":
        backend = "onnxruntime"
    runtime_module(backend)  # said before a checkpoint is exported for nothing
    if backend == "onnxruntime":
        providers = gpu_providers(str(device))
    elif device in ("auto", "cpu"):
        providers = CPU
    else:
        raise ExportError(f"backend {backend} runs on the CPU here; use --device cpu (or --backend torch for {device})")
    folder = source if source.is_dir() else cached_export(source, weights)
    manifest = read_manifest(folder)
    threads = torch.get_num_threads()
    graph = (manifest.get("int8") or {}).get("graph", "extractor")
    extractor = ExportedExtractor(folder, manifest, backend, threads, max_people, providers, graph)
    step_graph = Graph(folder, "step", backend, 1)  # a GRU step over a few tracks: one thread
    layers, hidden = manifest["state"]["layers"], manifest["state"]["hidden"]

    def step(x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        probs, *new = step_graph(x.numpy(), *(s.contiguous().numpy() for s in state))
        return torch.from_numpy(probs), [torch.from_numpy(n) for n in new]

    names = manifest["class_names"]
    background = manifest.get("background")
    rules = manifest.get("novelty")
    try:
        novelty = Novelty.from_state(torch.load(folder / rules, weights_only=True) if rules else None)
    except (OSError, RuntimeError, TypeError, KeyError) as e:
        raise ExportError(f"{folder / rules}: unreadable ({str(e).splitlines()[0]}); export the checkpoint again") from None
    return Parts(
        names, manifest["extractor"], manifest["rejection"], novelty, background if background in names else None, manifest["cell"],
        extractor, step, (layers, hidden), torch.device("cpu"), warmup_frames=manifest.get("warmup_frames", 0),
    )  # fmt: skip

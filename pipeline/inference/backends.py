"""Which backend runs a model: PyTorch for a checkpoint, ONNX Runtime or OpenVINO for an exported folder.

The one place that knows the backends by name (``--backend``); each returns the same
:class:`~pipeline.inference.parts.Parts`. The optional runtimes are imported only when asked for.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.inference.parts import Parts
from pipeline.inference.torch_backend import load_torch
from pipeline.model.checkpoint import CheckpointError
from pipeline.options import BACKENDS, MAX_PEOPLE


def load_parts(
    source: str | Path, backend: str = "auto", device: str = "auto", half: bool = True, weights: str | None = None, max_people: int = MAX_PEOPLE,
    step_device: str = "auto",
) -> Parts:  # fmt: skip
    """A checkpoint runs with PyTorch (``auto``) or, exported beside it on first use, with ONNX Runtime or
    OpenVINO; an exported folder runs with ONNX Runtime (``auto``) or OpenVINO."""
    if backend not in BACKENDS:
        raise CheckpointError(f"backend '{backend}' unknown: use one of {', '.join(BACKENDS)}")
    if Path(source).is_dir() or backend not in ("auto", "torch"):
        from pipeline.inference import runtime  # onnxruntime / openvino load only when asked for

        return runtime.load_exported(source, backend, device=device, weights=weights, max_people=max_people)
    return load_torch(source, device, half, weights, max_people, step_device)

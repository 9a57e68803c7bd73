"""What streaming inference needs of a model, whatever runs it: the one interface every backend gives.

``pipeline.inference.predictor`` steps frames through :class:`Parts`; the backends build them: PyTorch from a
checkpoint (``torch_backend``), ONNX Runtime and OpenVINO from an exported folder (``runtime``), chosen by
``backends.load_parts``. The predictor knows none of them by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.data.features import Extractor
from pipeline.model.novelty import Novelty
from pipeline.model.rnn import ActionRNN

Step = Callable[[torch.Tensor, list[torch.Tensor]], tuple[torch.Tensor, list[torch.Tensor]]]


@dataclass
class Parts:
    """What streaming needs, whatever runs it: the checkpoint's record, an extractor (uint8 frames ->
    :class:`~pipeline.data.features.Detections`), a recurrent ``step`` (features (N, D) and state ->
    probabilities (N, C) and the next state, each state tensor (layers, N, hidden)), and the rejection rules."""

    class_names: list[str]
    record: dict
    rejection: dict
    novelty: Novelty
    background: str | None
    cell: str
    extractor: Extractor
    step: Step
    state_shape: tuple[int, int]  # layers, hidden
    device: torch.device  # the extractor's
    model: ActionRNN | None = None  # PyTorch only: the gates plot reads it
    step_device: torch.device | None = None  # where ``step``, the states and the rules run (None: ``device``)
    warmup_frames: int = 0  # a track's first frames, left out of its label as training leaves them out of the loss

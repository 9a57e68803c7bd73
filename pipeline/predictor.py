"""Frames -> per-frame class probabilities, streaming: the extractor and the GRU built from a checkpoint.

The checkpoint alone configures the extractor (weights identity, image size, layers, fps), so features
match training exactly. Every call costs one extractor forward over the new frames and one recurrent pass
over them with the hidden state carried: a batch of frames gives the same per-frame outputs as the frames
one at a time, and no window is ever recomputed. Results stay on the device until one copy per batch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.checkpoint import CheckpointError, check_extractor, read_checkpoint
from pipeline.classifier import ActionClassifier
from pipeline.features import ExtractorConfig, FeatureExtractor, resolve_device
from pipeline.gates import ExplicitGRU, mean_gate_activity
from pipeline.model import Hidden


@dataclass
class Predictions:
    """Per-frame results of one batch, on the host: ``probs`` (B, C), the main person's box (B, 4 xyxy,
    source pixels), keypoints (B, 17, 3) and presence (B,)."""

    probs: np.ndarray
    boxes: np.ndarray
    keypoints: np.ndarray
    present: np.ndarray

    def __len__(self) -> int:
        return len(self.probs)


class ActionPredictor:
    """Streaming action recognition from a training checkpoint.

    ``predictor(frames)`` with uint8 BGR frames (B, H, W, 3), consecutive in time at the checkpoint's fps,
    returns their :class:`Predictions` and carries the recurrent state to the next call; ``reset()``
    starts a new sequence (a new video, or the live demo's reset).
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", half: bool = True, weights: str | None = None):
        ckpt = read_checkpoint(checkpoint)
        hp = ckpt["hyper_parameters"]
        self.record: dict = hp["extractor"]
        self.class_names: list[str] = list(hp["class_names"])
        cfg = {k: v for k, v in self.record.items() if k in ExtractorConfig.__dataclass_fields__}
        if weights:  # the same weights file elsewhere; its sha256 must still match
            cfg["weights"] = weights
        self.device = resolve_device(device)
        self.extractor = FeatureExtractor(ExtractorConfig.from_dict(cfg))
        check_extractor(self.record, self.extractor.identity, self.extractor.feature_dim, source=f"checkpoint {checkpoint}")
        self.extractor.place(self.device, half=half)
        params = inspect.signature(ActionClassifier).parameters
        classifier = ActionClassifier(**{k: v for k, v in hp.items() if k in params})  # Lightning adds its own keys
        try:
            classifier.load_state_dict(ckpt["state_dict"])
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint {checkpoint}: weights do not fit its own settings ({str(e).splitlines()[0]})") from None
        self.model = classifier.model.eval().to(self.device)
        self.cell: str = hp.get("cell", "gru")
        self.hidden: Hidden | None = None
        self.last_features: torch.Tensor | None = None  # (B, D) of the last call, on the device
        self._inspector = ExplicitGRU(self.model.rnn).to(self.device) if self.cell == "gru" else None
        self._gate_hidden: torch.Tensor | None = None

    @property
    def config(self) -> ExtractorConfig:
        return self.extractor.config

    @property
    def fps(self) -> float | None:
        """The frame rate the model was trained at (None: each video's own)."""
        return self.config.fps

    def reset(self) -> None:
        self.hidden = None
        self._gate_hidden = None

    @torch.inference_mode()
    def gate_activity(self) -> dict[str, np.ndarray] | None:
        """Mean update and reset gate per frame of the last call, from the explicit GRU cell run beside
        ``nn.GRU`` with its own carried state (inspection only; None for LSTM / RNN models)."""
        if self._inspector is None or self.last_features is None:
            return None
        _, self._gate_hidden, gates = self._inspector(self.model.embed(self.last_features[None].float()), self._gate_hidden)
        return {k: v[0].cpu().numpy() for k, v in mean_gate_activity(gates).items()}

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray | torch.Tensor) -> Predictions:
        out = self.extractor(frames)
        self.last_features = out.features
        logits, self.hidden = self.model(out.features[None].float(), hidden=self.hidden)
        probs = logits[0].softmax(-1)
        # one device -> host copy per batch
        host = torch.cat([probs, out.boxes, out.keypoints.flatten(1), out.present[:, None].float()], 1).cpu().numpy()
        c = probs.shape[1]
        return Predictions(
            probs=host[:, :c],
            boxes=host[:, c : c + 4],
            keypoints=host[:, c + 4 : -1].reshape(len(host), -1, 3),
            present=host[:, -1] > 0.5,
        )

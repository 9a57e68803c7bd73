"""Checkpoint -> :class:`~pipeline.inference.parts.Parts` with PyTorch: the extractor and the classifier as trained.

The checkpoint alone configures the extractor (weights identity, image size, layers, fps), so the features
match training; a checkpoint whose weights or feature size differ is refused. Export builds its graphs from
these same parts (``pipeline.inference.export``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.data.features import ExtractorConfig, FeatureExtractor, resolve_device
from pipeline.inference.parts import Parts
from pipeline.model.checkpoint import CheckpointError, check_extractor, read_checkpoint
from pipeline.model.classifier import ActionClassifier
from pipeline.options import MAX_PEOPLE


def step_device_for(device: torch.device, step_device: str = "auto") -> torch.device:
    """Where the recurrent step, the states and the rules run: ``auto`` is the extractor's device.

    On a GPU a frame's step is a few dozen tiny kernels; on the host it is as many tiny CPU operations. The
    GPU check measured both on an H200 (10 people in view, p50 / p95 per frame): 11.9 / 13.7 ms with the
    step on the GPU, 13.2 / 27.8 ms with it on the CPU (README "On a GPU"), hence the default."""
    return device if step_device == "auto" else resolve_device(step_device)


def load_torch(
    checkpoint: str | Path, device: str = "auto", half: bool = True, weights: str | None = None, max_people: int = MAX_PEOPLE,
    step_device: str = "auto",
) -> Parts:  # fmt: skip
    """The PyTorch backend from a training checkpoint."""
    ckpt = read_checkpoint(checkpoint)
    hp = ckpt["hyper_parameters"]
    record: dict = hp["extractor"]
    class_names = list(hp["class_names"])
    config = ExtractorConfig.from_record({**record, "weights": weights} if weights else record)  # weights: the same file elsewhere
    dev = resolve_device(device)
    extractor = FeatureExtractor(config, max_people=max_people)
    check_extractor(record, extractor.identity, extractor.feature_dim, source=f"checkpoint {checkpoint}")
    extractor.place(dev, half=half)
    classifier = ActionClassifier.from_hparams(hp)
    try:
        classifier.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {checkpoint}: weights do not fit its own settings ({str(e).splitlines()[0]})") from None
    sdev = step_device_for(dev, step_device)
    model = classifier.model.eval().to(sdev)
    cell = hp.get("cell", "gru")
    name = hp.get("background", "background")

    def step(x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits, new = model(x[:, None].float(), hidden=tuple(state) if cell == "lstm" else state[0])
        return logits[:, 0].softmax(-1), list(new) if cell == "lstm" else [new]

    return Parts(
        class_names, record, classifier.rejection, classifier.novelty.to(sdev), name if name in class_names else None, cell, extractor, step,
        model.state_shape, dev, model, sdev, hp.get("warmup_frames", 0),
    )  # fmt: skip

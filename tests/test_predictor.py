"""Streaming inference equals the offline forward; the checkpoint alone configures the extractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REAL_WEIGHTS, WEIZMANN, make_checkpoint, needs_shared, write_clip

from pipeline.data.extract import extract_video
from pipeline.data.features import POSE_DIM
from pipeline.data.video import VideoReader
from pipeline.inference.predictor import ActionPredictor
from pipeline.model.checkpoint import CheckpointError
from pipeline.model.gates import ExplicitGRU, mean_gate_activity
from pipeline.model.novelty import MotionRule, Novelty, PrototypeRule


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint) -> ActionPredictor:
    return ActionPredictor(tiny_checkpoint, device="cpu")


@pytest.mark.parametrize("probe", [False, True])
def test_streaming_steps_equal_the_full_sequence_forward(predictor, tmp_path, probe):
    if probe:  # a frame probe fused in: still one score per frame from what has been seen so far
        predictor = ActionPredictor(make_checkpoint(tmp_path / "probe.ckpt", probe_share=0.5), device="cpu")
        assert predictor.model.share == 0.5 and predictor.model.probe_weight.abs().sum() > 0
    clip = write_clip(tmp_path / "a.avi", frames=30)
    features = torch.from_numpy(extract_video(predictor.extractor, clip).subject())
    with torch.inference_mode():
        offline = predictor.model(features[None])[0][0].softmax(-1)
        hidden, streamed = None, []
        for x_t in features:
            logits, hidden = predictor.model.step(x_t[None], hidden)
            streamed.append(logits[0].softmax(-1))
    assert (torch.stack(streamed) - offline).abs().max() < 1e-4


def test_batched_frames_give_the_same_results_as_one_at_a_time(predictor, tmp_path):
    clip = write_clip(tmp_path / "a.avi", frames=21)
    frames = np.stack([f for _, f in VideoReader(clip)])
    predictor.reset()
    batched = np.concatenate([predictor(frames[i : i + 8]).probs for i in range(0, len(frames), 8)])
    predictor.reset()
    single = np.concatenate([predictor(frames[i : i + 1]).probs for i in range(len(frames))])
    np.testing.assert_allclose(batched, single, atol=1e-4)
    # and the offline path over cached features agrees with both
    features = torch.from_numpy(extract_video(predictor.extractor, clip).subject())
    with torch.inference_mode():
        offline = predictor.model(features[None])[0][0].softmax(-1).numpy()
    np.testing.assert_allclose(batched, offline, atol=1e-4)


@needs_shared
def test_velocity_streams_through_the_predictor_as_over_the_whole_track(tmp_path):
    """A real person doing jumping jacks (the tiny extractor's pose does not move): the change the cell reads rides in the
    carried state, so batched steps, the gate panel's cell and the offline forward all agree."""
    ckpt = make_checkpoint(tmp_path / "moving.ckpt", weights=str(REAL_WEIGHTS), imgsz=320, layers=(), velocity=True)
    predictor = ActionPredictor(ckpt, device="cpu", max_people=1)
    predictor.inspect = True
    frames = np.stack([f for _, f in VideoReader(WEIZMANN / "jack" / "daria_jack.avi")][:24])
    streamed = [predictor(frames[i : i + 8]) for i in range(0, len(frames), 8)]
    features = torch.from_numpy(extract_video(predictor.extractor, WEIZMANN / "jack" / "daria_jack.avi").subject()[:24])
    assert (features[:, 0] > 0.5).all()  # seen in every frame, so one row a frame
    with torch.inference_mode():
        model = predictor.model
        change = model._moving(model.normalise(features[None]), features[None], None)[0][0, :, -POSE_DIM:]
        assert change[2:].abs().mean() > 0.01  # the jacks move: the change is not all zeros
        offline = model(features[None])[0][0].softmax(-1).numpy()
        gates = mean_gate_activity(ExplicitGRU(model.rnn)(model.embed(features[None]))[2])
    np.testing.assert_allclose(np.concatenate([p.probs for p in streamed]), offline, atol=1e-4)
    np.testing.assert_allclose(np.concatenate([p.gates["update"] for p in streamed]), gates["update"][0].numpy(), atol=1e-5)


def rules_for(features: torch.Tensor, hidden: int) -> Novelty:
    """Both novelty rules, fitted on three made-up people from ``features`` (keypoints swinging), and class
    means that put the GRU's outputs around the limit: a comparison with something to compare."""
    people = [features.clone() for _ in range(3)]
    for k, x in enumerate(people):
        x[:, -POSE_DIM:][:, 6:40:2] += 0.05 * torch.sin(torch.arange(len(x))[:, None] * (0.5 + 0.2 * k))
    g = torch.Generator().manual_seed(0)
    protos = PrototypeRule(0.3 * torch.randn(2, hidden, generator=g), torch.eye(hidden), 1.0, 8, 0.05)
    return Novelty(MotionRule.fit(people, ["a", "b", "c"], [], 12, 0.05, 8), protos, prototype_weight=0.1)  # as trained by default


def test_streaming_novelty_equals_the_rules_over_the_whole_track(tmp_path):
    plain = make_checkpoint(tmp_path / "plain.ckpt")
    clip = write_clip(tmp_path / "a.avi", frames=30)
    features = torch.from_numpy(extract_video(ActionPredictor(plain, device="cpu").extractor, clip).subject())
    hidden = ActionPredictor(plain, device="cpu").model.state_shape[1]  # the representation the head reads
    both = rules_for(features, hidden)
    frames = np.stack([f for _, f in VideoReader(clip)])
    for k, rules in enumerate([Novelty(motion=both.motion), Novelty(prototypes=both.prototypes), both]):
        p = ActionPredictor(make_checkpoint(tmp_path / f"rules{k}.ckpt", novelty=rules), device="cpu")
        with torch.inference_mode():
            offline = p.novelty.sequence(features, p.model.outputs(features[None])[0][0]).numpy()
        assert not offline[:7].any() and (offline[8:] > 0).all()  # judged from the 8th frame of the track on
        for batch in (8, 1):
            p.reset()
            streamed = np.concatenate([p(frames[i : i + batch]).novelty for i in range(0, len(frames), batch)])
            np.testing.assert_allclose(streamed, offline, rtol=1e-3, atol=1e-4)


def test_reset_starts_a_new_sequence(predictor, tmp_path):
    frames = np.stack([f for _, f in VideoReader(write_clip(tmp_path / "a.avi", frames=6))])
    predictor.reset()
    first = predictor(frames).probs
    second = predictor(frames).probs  # carried state: different
    predictor.reset()
    again = predictor(frames).probs
    np.testing.assert_allclose(first, again, atol=1e-6)
    assert np.abs(first - second).max() > 1e-6


def test_checkpoint_configures_the_extractor(tmp_path):
    ckpt = make_checkpoint(tmp_path / "c.ckpt", fps=12.5, layers=(19,))
    p = ActionPredictor(ckpt, device="cpu")
    assert p.fps == 12.5 and p.config.layers == (19,) and p.config.imgsz == 64
    assert p.class_names == ["walk", "wave"]


def test_the_input_size_can_be_set_at_inference(tmp_path):
    p = ActionPredictor(make_checkpoint(tmp_path / "c.ckpt"), device="cpu")
    p.set_input_size(96, 1024)
    assert (p.config.imgsz, p.config.max_imgsz) == (96, 1024) and p.config.input_size(144, 360) == 192
    p.set_input_size(max_imgsz=0)
    assert p.config.max_imgsz is None and p.config.input_size(144, 360) == 96
    with pytest.raises(ValueError, match="below --imgsz"):
        p.set_input_size(320, 160)


def test_feature_size_mismatch_is_a_clear_error(tmp_path):
    ckpt = make_checkpoint(tmp_path / "c.ckpt")
    blob = torch.load(ckpt, weights_only=True)
    blob["hyper_parameters"]["extractor"]["feature_dim"] += 1  # as if trained with other layers
    torch.save(blob, ckpt)
    with pytest.raises(CheckpointError, match="expects .* features per frame"):
        ActionPredictor(ckpt, device="cpu")


def test_other_weights_are_a_clear_error(tmp_path):
    ckpt = make_checkpoint(tmp_path / "c.ckpt")
    blob = torch.load(ckpt, weights_only=True)
    blob["hyper_parameters"]["extractor"]["weights_sha256"] = "0" * 64
    torch.save(blob, ckpt)
    with pytest.raises(CheckpointError, match="use the same weights file"):
        ActionPredictor(ckpt, device="cpu")

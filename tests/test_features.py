import numpy as np
import pytest
import torch

from conftest import REAL_WEIGHTS, TINY_MODEL, WEIZMANN, needs_shared, write_clip
from pipeline.features import (
    FLIP_KEYPOINTS, POSE_DIM, ExtractorConfig, FeatureExtractor, letterbox_shape, mirror_features,
)  # fmt: skip
from pipeline.video import VideoReader


@pytest.fixture(scope="module")
def tiny():
    return FeatureExtractor(ExtractorConfig(weights=TINY_MODEL, imgsz=64, layers=(16, 19, 22)))


def test_one_forward_gives_pooled_features_and_pose(tiny, tmp_path):
    frames = np.stack([f for _, f in VideoReader(write_clip(tmp_path / "a.avi", frames=5))])
    out = tiny(frames)
    assert tiny.pooled_dim == 64 + 128 + 256 and tiny.feature_dim == tiny.pooled_dim + POSE_DIM
    assert out.features.shape == (5, tiny.feature_dim) and out.features.dtype == torch.float32
    assert out.boxes.shape == (5, 4) and out.keypoints.shape == (5, 17, 3)
    # the pose block follows the flag: zeros exactly where nobody is present
    pose = out.features[:, -POSE_DIM:]
    assert torch.equal(pose[:, 0], out.present.float())
    assert (pose[~out.present] == 0).all()


def test_nobody_present_gives_an_all_zero_pose_block(tmp_path):
    ex = FeatureExtractor(ExtractorConfig(weights=TINY_MODEL, imgsz=64, layers=(22,), conf=1.01, pool="person"))
    out = ex(np.zeros((3, 48, 64, 3), np.uint8))
    assert not out.present.any() and (out.features == 0).all()  # person pooling is empty too


def test_frames_are_batch_independent(tiny, tmp_path):
    frames = np.stack([f for _, f in VideoReader(write_clip(tmp_path / "a.avi", frames=6))])
    together = tiny(frames).features
    alone = torch.cat([tiny(frames[i : i + 1]).features for i in range(6)])
    assert (together - alone).abs().max() < 1e-4


def test_fast_head_equals_the_full_pose_head(tiny, tmp_path):
    """Box and keypoints computed at the best anchor only equal what Ultralytics' whole head gives there."""
    frames = np.stack([f for _, f in VideoReader(write_clip(tmp_path / "a.avi", frames=6, size=(96, 64)))])
    with torch.inference_mode():
        x, *_ = tiny.preprocess(frames)
        _, feats = tiny._body(x)
        fast = tiny._detect(feats)
        tiny._fast_head = False
        try:
            full = tiny._detect(feats)
        finally:
            tiny._fast_head = True
    for a, b in zip(fast, full):
        assert (a - b).abs().max() < 1e-3


def test_letterbox_matches_ultralytics_shapes():
    assert letterbox_shape(144, 180, 320) == (256, 320, 256, 320, 320 / 180)
    h, w, ph, pw, _ = letterbox_shape(144, 180, 256)
    assert (h, w, ph, pw) == (205, 256, 224, 256)


def test_cache_key_depends_on_everything_that_changes_features(tiny):
    base = ExtractorConfig(weights=TINY_MODEL)
    keys = {base.key(tiny.identity)}
    for change in ({"imgsz": 256}, {"layers": (22,)}, {"fps": 10.0}, {"pool": "global"}, {"conf": 0.5}, {"max_frames": 9}):
        keys.add(ExtractorConfig(**{**base.__dict__, **change}).key(tiny.identity))
    assert len(keys) == 7


def test_invalid_layers_are_refused():
    with pytest.raises(ValueError, match="increasing"):
        FeatureExtractor(ExtractorConfig(weights=TINY_MODEL, layers=(22, 16)))
    with pytest.raises(ValueError, match="layers"):
        FeatureExtractor(ExtractorConfig(weights=TINY_MODEL, layers=(23,)))


def test_mirroring_flips_x_swaps_sides_and_is_its_own_inverse():
    torch.manual_seed(0)
    x = torch.rand(4, 10 + POSE_DIM)
    x[:, -POSE_DIM] = 1.0  # present
    x[3, -POSE_DIM:] = 0.0  # nobody in frame 3
    m = mirror_features(x)
    pose, mpose = x[:, -POSE_DIM:], m[:, -POSE_DIM:]
    assert torch.equal(m[:, :10], x[:, :10])
    assert torch.allclose(mpose[:3, 2], 1 - pose[:3, 2])
    kx = pose[:3, 6:40:2]
    assert torch.allclose(mpose[:3, 6:40:2], 1 - kx[:, list(FLIP_KEYPOINTS)])
    assert torch.equal(mpose[:3, 40:], pose[:3, 40:][:, list(FLIP_KEYPOINTS)])
    assert (mpose[3] == 0).all()
    assert torch.allclose(mirror_features(m), x)


@needs_shared
def test_matches_ultralytics_predict_and_embed_on_a_real_clip():
    """Our single batched pass gives what a user gets from YOLO.predict (main person) and YOLO.embed."""
    from ultralytics import YOLO

    ex = FeatureExtractor(ExtractorConfig(weights=str(REAL_WEIGHTS), imgsz=320, layers=(16, 19, 22), pool="global"))
    frames = np.stack([f for _, f in VideoReader(WEIZMANN / "walk" / "daria_walk.avi", max_frames=40)])[::8]
    out = ex(frames)
    yolo = YOLO(str(REAL_WEIGHTS))
    for i, frame in enumerate(frames):
        r = yolo.predict(frame, imgsz=320, conf=0.25, verbose=False)[0]
        assert len(r.boxes) >= 1 and out.present[i]
        assert (r.boxes.xyxy[0] - out.boxes[i]).abs().max() < 1.0  # pixels
        assert (r.keypoints.data[0, :, :2] - out.keypoints[i, :, :2]).abs().max() < 2.0
        emb = torch.cat(yolo.embed(frame, imgsz=320, embed=[16, 19, 22], verbose=False))
        assert (emb - out.features[i, : ex.pooled_dim]).abs().max() < 0.05

import math

import pytest
import torch

from pipeline.data.features import KCONF, KXY, NUM_KEYPOINTS, POSE_DIM, mirror_features, reframe
from pipeline.model.body import BLOCKS, JOINTS, block_dims, body_features
from pipeline.model.rnn import ActionRNN
from pipeline.options import OptionError

ASPECT = 16 / 9
# a person standing, arms out to the sides and the right forearm up: (x, y) in frame heights, COCO order
STANDING = [
    (0.50, 0.20), (0.49, 0.19), (0.51, 0.19), (0.48, 0.20), (0.52, 0.20),  # face
    (0.45, 0.30), (0.55, 0.30),  # shoulders
    (0.35, 0.30), (0.65, 0.30),  # elbows: arms straight out
    (0.25, 0.30), (0.65, 0.20),  # wrists: left straight on, right forearm up (a right angle at the right elbow)
    (0.47, 0.50), (0.53, 0.50),  # hips
    (0.47, 0.65), (0.53, 0.65), (0.47, 0.80), (0.53, 0.80),  # knees, ankles
]  # fmt: skip


def pose_row(points, conf: float = 0.9, pooled: int = 3) -> torch.Tensor:
    """A feature row (pooled zeros + pose block) of a person whose keypoints are at ``points`` (frame heights)."""
    p = torch.tensor(points)
    px = p[:, 0] / ASPECT  # to frame widths
    x0, x1, y0, y1 = px.min() - 0.02, px.max() + 0.02, p[:, 1].min() - 0.02, p[:, 1].max() + 0.02
    pose = torch.zeros(POSE_DIM)
    pose[0], pose[1] = 1.0, 0.9
    pose[2:6] = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])
    pose[KXY] = torch.stack([(px - x0) / (x1 - x0), (p[:, 1] - y0) / (y1 - y0)], 1).flatten()
    pose[KCONF] = conf
    return torch.cat([torch.zeros(pooled), pose])


def angles_of(row: torch.Tensor) -> torch.Tensor:
    start = block_dims(("centred", "bones"))
    return body_features(row, BLOCKS, ASPECT)[..., start : start + block_dims(("angles",))]


def test_joint_angles_are_read_in_the_body_s_own_units():
    a = angles_of(pose_row(STANDING))
    cos = dict(zip(JOINTS, a[: len(JOINTS)].tolist()))
    assert cos[(5, 7, 9)] == pytest.approx(-1.0, abs=1e-5)  # left arm straight: 180 degrees
    assert cos[(6, 8, 10)] == pytest.approx(0.0, abs=1e-5)  # right forearm up: 90 degrees, only if x and y share a unit
    assert cos[(11, 13, 15)] == pytest.approx(-1.0, abs=1e-5)  # straight knee
    assert a[-2:].tolist() == pytest.approx([1.0, 0.0], abs=1e-5)  # torso upright: no tilt


def test_the_body_blocks_do_not_change_with_the_camera_s_distance_or_place_and_angles_not_with_a_mirror():
    row = pose_row(STANDING)
    moved = reframe(row, 0.5, 0.1, -0.05)  # zoomed out and shifted: box moves and shrinks, the body is the same
    geometric = block_dims(("centred", "bones", "angles"))
    assert torch.allclose(body_features(row)[:geometric], body_features(moved)[:geometric], atol=1e-4)
    swap = [1, 0, 3, 2, 5, 4, 7, 6]  # JOINTS come in left, right pairs: a mirror swaps them
    swap = swap + [8 + i for i in swap] + [16, 17]
    assert torch.allclose(angles_of(row)[swap], angles_of(mirror_features(row)), atol=1e-5)
    arms_down = pose_row(STANDING[:7] + [(0.44, 0.40), (0.56, 0.40), (0.44, 0.48), (0.56, 0.48)] + STANDING[11:])
    assert not torch.allclose(body_features(row)[:geometric], body_features(arms_down)[:geometric], atol=1e-2)


def test_unsure_keypoints_and_empty_frames_give_zeros():
    row = pose_row(STANDING)
    row[-POSE_DIM:][KCONF.start + 8] = 0.2  # the right elbow unsure
    out = body_features(row, ("centred", "angles"))
    centred = out[: 2 * NUM_KEYPOINTS].view(NUM_KEYPOINTS, 2)
    assert centred[8].abs().sum() == 0 and centred[7].abs().sum() > 0
    cos = out[2 * NUM_KEYPOINTS : 2 * NUM_KEYPOINTS + len(JOINTS)]
    assert cos[1] == 0 and cos[0] != 0  # the right elbow's angle is not read; the left's is
    assert body_features(torch.zeros(2, 4, 3 + POSE_DIM)).abs().sum() == 0  # nobody in view


def test_a_model_with_body_blocks_streams_and_refuses_unknown_blocks():
    torch.manual_seed(0)
    x = torch.stack([pose_row(STANDING) + 0.01 * torch.randn(3 + POSE_DIM) for _ in range(40)]).view(2, 20, -1)
    m = ActionRNN(3 + POSE_DIM, 3, hidden_size=8, proj_dim=8, pooled_dim=3, summary_frames=5, body=("angles", "bones")).eval()
    m.set_normalization(x.flatten(0, 1).mean(0), x.flatten(0, 1).std(0), list(x))
    assert m.mean.shape[0] == 3 + POSE_DIM + block_dims(("angles", "bones"))
    assert m.std[-1] != 1  # the body blocks' spread measured on the training videos, not left at 1
    full, _ = m(x)
    hidden, steps = None, []
    for t in range(20):
        logits, hidden = m.step(x[:, t], hidden)
        steps.append(logits)
    assert (torch.stack(steps, 1) - full).abs().max() < 1e-5
    with pytest.raises(OptionError, match="elbows"):
        ActionRNN(3 + POSE_DIM, 3, body=("elbows",))
    assert math.isfinite(float(full.detach().sum()))


def test_without_framing_the_model_reads_the_body_not_where_the_camera_put_it():
    torch.manual_seed(0)
    x = torch.stack([pose_row(STANDING) + 0.01 * torch.randn(3 + POSE_DIM) for _ in range(24)]).view(2, 12, -1)
    x[..., -POSE_DIM] = 1.0
    moved = reframe(x, 0.6, 0.15, 0.1)  # the same people, filmed from further away and off-centre
    for framing, same in ((False, True), (True, False)):
        m = ActionRNN(3 + POSE_DIM, 3, hidden_size=8, proj_dim=8, pooled_dim=3, body=("centred", "angles"), framing=framing).eval()
        m.set_normalization(x.flatten(0, 1).mean(0), x.flatten(0, 1).std(0), list(x))
        assert torch.allclose(m(x)[0], m(moved)[0], atol=1e-4) is same

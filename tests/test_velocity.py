import pytest
import torch

from pipeline.data.features import POSE_DIM
from pipeline.model.rnn import ActionRNN
from pipeline.model.velocity import DECAY, carry_dim, velocity
from pipeline.options import OptionError


def test_a_steady_movement_reads_its_speed_and_standing_still_reads_zero():
    t = torch.arange(60, dtype=torch.float32)
    z = torch.stack([0.02 * t, torch.full_like(t, 3.0)], -1)[None]  # one value moving, one still
    change, carry = velocity(z, torch.ones(1, 60, dtype=torch.bool), None)
    assert change[0, 0].abs().max() == 0  # nothing before the first frame: no change
    assert torch.allclose(change[0, 40:, 0], torch.full((20,), 0.02 / (1 - DECAY)), atol=1e-4)  # 4 frames' worth
    assert change[0, :, 1].abs().max() < 1e-5 and carry.shape == (1, 60, carry_dim(2))


def test_lost_frames_read_no_change_and_a_frame_after_one_is_not_a_jump():
    t = torch.arange(40, dtype=torch.float32)
    z = (0.05 * t)[None, :, None].clone()
    seen = torch.ones(1, 40, dtype=torch.bool)
    seen[0, 20] = False
    z[0, 20] = -7.0  # what a lost frame's zeros normalise to: must not count
    change, _ = velocity(z, seen, None)
    steady = 0.05 / (1 - DECAY)
    assert change[0, 20, 0] == 0 and 0.5 * steady < change[0, 21, 0] < 2 * steady
    seen[0, 21:31] = False  # ten frames lost: the mean is too old to move from, so the return reads still
    assert velocity(z, seen, None)[0][0, 31, 0] == 0


def test_resumed_from_its_carry_it_equals_the_whole_sequence():
    torch.manual_seed(0)
    z, seen = torch.randn(2, 50, 3), torch.rand(2, 50) > 0.3
    whole, carry = velocity(z, seen, None)
    head, c = velocity(z[:, :23], seen[:, :23], None)
    tail, _ = velocity(z[:, 23:], seen[:, 23:], c[:, -1])
    assert torch.allclose(torch.cat([head, tail], 1), whole, atol=1e-5)


def test_the_cell_reads_the_change_and_the_probe_does_not():
    torch.manual_seed(0)
    still = ActionRNN(POSE_DIM, 3, hidden_size=8, proj_dim=8, summary_frames=16).eval()
    moving = ActionRNN(POSE_DIM, 3, hidden_size=8, proj_dim=8, summary_frames=16, velocity=True).eval()
    assert moving.state_shape[1] == still.state_shape[1] + carry_dim(POSE_DIM)
    x = torch.rand(1, 30, POSE_DIM)
    x[..., 0] = 1.0  # seen in every frame
    fast = x.clone()
    fast[:, :, 2] += 0.05 * torch.arange(30)  # the same poses, the box sweeping across the frame
    moving.probe_weight.normal_()
    still.probe_weight.copy_(moving.probe_weight)
    with torch.no_grad():  # the time-blind probe reads no change, from its streamed input either
        assert torch.allclose(moving.probe_probs(x, moving.outputs(x)[0]), still.probe_probs(x), atol=1e-5)
    w = moving.proj[1].weight
    assert w.shape[1] == 2 * POSE_DIM
    with torch.no_grad():
        w[:, :POSE_DIM] = 0  # only the change reaches the cell: the same poses still differ by their speed
    assert (moving.embed(fast) - moving.embed(x)).abs().max() > 1e-3
    still.proj[1].weight.data[:] = 0  # without velocity nothing reaches it at all
    assert (still.embed(fast) - still.embed(x)).abs().max() == 0


def test_velocity_needs_the_pose_block():
    with pytest.raises(OptionError, match="--model.velocity needs the pose block"):
        ActionRNN(12, 3, velocity=True)

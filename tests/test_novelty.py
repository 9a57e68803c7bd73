"""The rules behind "unknown": motion unlike the training videos, GRU states far from every class; calibrated,
saved, and the same offline as streaming."""

from __future__ import annotations

import io
import math

import torch

from pipeline.data.features import POSE_DIM
from pipeline.model.novelty import MotionRule, Novelty, PrototypeRule, describe, sequence_windows


def track(t: int, period: float, amplitude: float, seed: int, absent: tuple[int, ...] = (), up: bool = False) -> torch.Tensor:
    """Features (t, 3 + POSE_DIM) of a person whose keypoints swing sideways (``up``: up and down) with
    ``period`` frames and ``amplitude`` (a stand-in for an action), with a little noise; ``absent`` frames
    are all-zero rows, as in a track."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(t, 3 + POSE_DIM)
    pose = x[:, 3:]
    pose[:, 0], pose[:, 1] = 1.0, 0.9  # present, score
    pose[:, 2:6] = torch.tensor([0.5, 0.5, 0.2, 0.6])  # box
    phase = torch.arange(t)[:, None] * (2 * math.pi / period) + torch.arange(17)[None] * 0.3
    swing, rest = 0.5 + amplitude * torch.sin(phase), torch.linspace(0.1, 0.9, 17)[None].expand(t, 17)
    pose[:, 6:40:2] = (rest if up else swing) + 0.01 * torch.randn(t, 17, generator=g)
    pose[:, 7:40:2] = (swing if up else rest) + 0.01 * torch.randn(t, 17, generator=g)
    pose[:, 40:] = 0.8
    x[list(absent)] = 0
    return x


def test_a_window_describes_the_frames_with_the_person_only():
    x = track(40, 8, 0.2, 0)
    gaps = x.clone()
    gaps[[5, 6, 20]] = 0  # frames where the person was not seen
    d, n = describe(sequence_windows(x, 32)[-1:])
    d_gaps, n_gaps = describe(sequence_windows(gaps, 32)[-1:])
    assert n.item() == 32 and n_gaps.item() == 31  # frame 20 of the last 32 missing
    assert torch.allclose(d[:, :38], d_gaps[:, :38], atol=0.02)  # the means do not see the zeros
    # the window that streaming holds at frame t is the last 32 frames up to t, zeros before the start
    w = sequence_windows(x, 32)
    assert w.shape == (40, 32, POSE_DIM) and torch.equal(w[39], x[8:40, 3:]) and torch.equal(w[3, -4:], x[:4, 3:]) and not w[3, :-4].any()


def test_the_motion_rule_is_calibrated_on_held_out_groups_and_flags_motion_it_never_saw():
    # two actions (slow small swing, fast wide swing), each done by four people
    train = [track(60, p, a, seed=10 * i + k) for i in range(4) for k, (p, a) in enumerate([(16, 0.05), (6, 0.2)])]
    groups = [f"person{i}" for i in range(4) for _ in range(2)]
    val = [track(60, 16, 0.05, 99), track(60, 6, 0.2, 98)]
    rule = MotionRule.fit(train, groups, val, window=24, quantile=0.1, min_frames=8)
    assert rule is not None and len(rule.bank) == 8 * 60 - 8 * 7  # windows with 8 frames or more
    # calibrated on clips as new people show them: each training clip against the other people's, and
    # the validation clips; a tenth of those clips' median distances lie above the threshold
    assert rule.calibration == 8 + 2
    known = torch.cat([rule.novelty(sequence_windows(x, 24)) for x in val])
    assert (known > 1).float().mean() < 0.3
    # a new person doing a trained action is familiar; an action nobody trained (swinging up and down) is not
    new_known = rule.novelty(sequence_windows(track(60, 16, 0.05, 7), 24))[8:]
    unseen = rule.novelty(sequence_windows(track(60, 10, 0.12, 7, up=True), 24))[8:]
    assert (new_known > 1).float().mean() < 0.2 and (unseen > 1).float().mean() > 0.9
    # the first frames of a track are not judged
    assert not rule.novelty(sequence_windows(track(60, 10, 0.12, 7, up=True), 24))[:7].any()
    # one group only: nothing to calibrate a new person on, so no rule
    assert MotionRule.fit(train, ["one"] * len(train), val, 24, 0.1, 8) is None


def travelling(x: torch.Tensor, speed: float) -> torch.Tensor:
    """The track with the person's box moving sideways by ``speed`` (of the frame width) per frame."""
    x = x.clone()
    x[:, 3 + 2] = 0.3 + speed * torch.arange(len(x))
    return x


def test_a_person_in_half_of_a_wider_frame_moves_as_in_their_own_clip():
    # the same clip put in the left half of a frame twice as wide (two people side by side): in frame units
    # the box's centre and width halve, and nothing the body does changes
    x = travelling(track(60, 8, 0.2, 0), 0.003)
    wide = x.clone()
    wide[:, 3 + 2] /= 2
    wide[:, 3 + 4] /= 2
    d, n = describe(sequence_windows(x, 32))
    assert torch.allclose(describe(sequence_windows(wide, 32))[0], d, atol=1e-5)
    assert not torch.allclose(describe(sequence_windows(wide, 32), 1)[0], describe(sequence_windows(x, 32), 1)[0], atol=1e-2)  # the old one
    # a checkpoint's rule keeps the descriptor its bank was made with; those made before it said use the old one
    rule = MotionRule.fit([track(60, 8, 0.2, i) for i in range(3)], ["a", "b", "c"], [], window=32, quantile=0.1, min_frames=8)
    state = rule.state()
    assert state["descriptor"] == 2 and Novelty.from_state({"motion": state}).motion.descriptor == 2
    del state["descriptor"]
    old, w = Novelty.from_state({"motion": state}).motion, sequence_windows(x, 32)
    by_v1 = old._nearest(old._scaled(describe(w, 1)[0])) / old.threshold
    assert old.descriptor == 1 and torch.allclose(old.novelty(w)[8:], by_v1[8:])


def test_how_fast_the_body_travels_counts_as_much_as_what_the_limbs_do():
    # two actions whose limbs swing differently, each travelling at its own pace (as walk and run do)
    actions = [(16, 0.05, 0.002), (6, 0.2, 0.004)]
    train = [travelling(track(60, p, a, seed=10 * i + k), v) for i in range(4) for k, (p, a, v) in enumerate(actions)]
    groups = [f"person{i}" for i in range(4) for _ in range(2)]
    val = [travelling(track(60, p, a, 99 - k), v) for k, (p, a, v) in enumerate(actions)]
    rule = MotionRule.fit(train, groups, val, window=24, quantile=0.1, min_frames=8)
    slow = rule.novelty(sequence_windows(travelling(track(60, 16, 0.05, 7), 0.002), 24))[8:]
    twice = rule.novelty(sequence_windows(travelling(track(60, 16, 0.05, 7), 0.004), 24))[8:]
    # the first action's limbs at twice its pace: the box's 6 numbers weigh as much as the 102 keypoint ones,
    # so every frame is past the limit (weighed per number, a third of them would be)
    assert (slow > 1).float().mean() < 0.5 and (twice > 1).all()


def test_the_prototype_rule_measures_distance_to_the_nearest_class():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0]])
    train = [centres[c] + 0.5 * torch.randn(30, 2, generator=g) for c in (0, 1) * 5]
    labels = [0, 1] * 5
    val = [centres[c] + 0.5 * torch.randn(30, 2, generator=g) for c in (0, 1)]
    rule = PrototypeRule.fit(train, labels, val, 2, quantile=0.05, min_frames=4)
    assert rule is not None and torch.allclose(rule.means, centres, atol=0.2)
    assert abs((rule._distance(torch.cat([v[4:] for v in val])) > rule.threshold).float().mean() - 0.05) < 0.03
    h = torch.tensor([[3.0, 0.1], [0.0, 4.0]])  # near a class; far from both
    assert rule.novelty(h, torch.tensor([10, 10])).tolist()[0] < 1 < rule.novelty(h, torch.tensor([10, 10])).tolist()[1]
    assert rule.novelty(h, torch.tensor([4, 4])).tolist() == [0, 0]  # too young to judge
    assert PrototypeRule.fit(train, labels, [], 2, 0.05, 4) is None  # nothing to calibrate on


def test_the_rules_survive_a_weights_only_save_and_combine_by_weighted_geometric_mean():
    train = [track(50, p, a, seed=i) for i, (p, a) in enumerate([(16, 0.05), (6, 0.2)] * 3)]
    motion = MotionRule.fit(train, ["a", "a", "b", "b", "c", "c"], [], 16, 0.1, 8)
    protos = PrototypeRule(torch.zeros(2, 4), torch.eye(4), 2.0, 8, 0.05, 10)
    rules = Novelty(motion, protos, prototype_weight=0.1)
    buf = io.BytesIO()
    torch.save(rules.state(), buf)
    buf.seek(0)
    again = Novelty.from_state(torch.load(buf, weights_only=True))
    x, h = track(50, 10, 0.12, 3), torch.randn(50, 4)
    both = again.sequence(x, h)
    assert torch.equal(both, rules.sequence(x, h))
    alone = [Novelty(motion=again.motion).sequence(x, h), Novelty(prototypes=again.prototypes).sequence(x, h)]
    assert torch.allclose(both, alone[0] ** 0.9 * alone[1] ** 0.1) and (alone[0] != alone[1]).any()  # together, GRU state at its weight
    assert not Novelty() and Novelty.from_state(None).summary() == {} and set(rules.summary()) == {"motion", "prototypes"}
    assert rules.summary()["prototypes"]["weight"] == 0.1
    old = {k: v for k, v in rules.state().items() if k != "prototype_weight"}  # a checkpoint made before the weight: equal shares
    assert torch.allclose(Novelty.from_state(old).sequence(x, h), (alone[0] * alone[1]).sqrt())
    # placed once on the predictor's device (no copy of the bank per frame), saved from the host
    placed = Novelty.from_state(rules.state()).to("meta")
    tensors = [placed.motion.bank, placed.motion.centre, placed.motion.scale, placed.prototypes.means, placed.prototypes.precision]
    assert all(t.device.type == "meta" for t in tensors)
    saved = Novelty.from_state(rules.state()).state()
    assert all(v.device.type == "cpu" for rule in (saved["motion"], saved["prototypes"]) for v in rule.values() if torch.is_tensor(v))


def test_a_larger_quantile_calls_more_known_windows_unknown():
    train = [track(60, p, a, seed=10 * i + k) for i in range(4) for k, (p, a) in enumerate([(16, 0.05), (6, 0.2)])]
    groups = [f"p{i}" for i in range(4) for _ in range(2)]
    strict, loose = (MotionRule.fit(train, groups, [], 24, q, 8) for q in (0.02, 0.3))
    assert loose.threshold < strict.threshold and strict.calibration == loose.calibration == 8  # clips, each a new person
    new_person = [track(60, 16, 0.05, 50), track(60, 6, 0.2, 51)]
    share = [torch.cat([r.novelty(sequence_windows(x, 24))[7:] for x in new_person]).gt(1).float().mean() for r in (strict, loose)]
    assert share[0] <= share[1] and share[1] > 0

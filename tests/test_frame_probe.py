"""The frame probe: a linear model of single frames, its L2 weight chosen on the validation videos."""

import torch

from pipeline.model.frame_probe import L2, fit_probe, video_probs


def videos(n: int, shift: float, seed: int) -> tuple[list[torch.Tensor], list[int]]:
    """``n`` videos of 12 frames and 6 features, three classes told apart by feature ``class`` (by ``shift``)."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for i in range(n):
        x = torch.randn(12, 6, generator=g)
        x[:, i % 3] += shift
        xs.append(x)
        ys.append(i % 3)
    return xs, ys


def test_the_probe_learns_what_single_frames_tell():
    (train, ty), (val, vy), (test, sy) = videos(30, 1.5, 0), videos(12, 1.5, 1), videos(30, 1.5, 2)
    w, b, l2 = fit_probe(train, ty, val, vy, 3)
    assert w.shape == (3, 6) and b.shape == (3,) and l2 in L2
    p = video_probs(w, b, test)
    assert torch.allclose(p.sum(1), torch.ones(30)) and (p.argmax(1) == torch.tensor(sy)).float().mean() == 1.0


def test_ties_on_validation_choose_the_strongest_penalty_and_no_validation_the_middle_one():
    (train, ty), (val, vy) = videos(30, 6.0, 0), videos(12, 6.0, 1)  # every weight gets every video right
    w, _, l2 = fit_probe(train, ty, val, vy, 3)
    assert l2 == max(L2)
    w_weak, _, l2_none = fit_probe(train, ty, [], [], 3)
    assert l2_none == 1e-3 and w_weak.norm() > w.norm()  # the weaker penalty leaves larger weights


def test_each_video_weighs_the_same_and_its_warm_up_frames_not_at_all():
    """As the time-blind baseline: a clip ten times as long is one example, not ten; the frames a video's
    score leaves out (its warm-up) are not fitted either."""
    (train, ty), (val, vy) = videos(30, 1.5, 0), videos(12, 1.5, 1)
    w, b, l2 = fit_probe(train, ty, val, vy, 3, warmup=4)
    longer = [torch.cat([x[:4], *[x[4:]] * 10]) if i % 2 else x for i, x in enumerate(train)]  # every other clip, 10x its scored frames
    garbled = [torch.cat([x[:4] + 50.0, x[4:]]) for x in train]  # warm-up frames far off
    for other in (longer, garbled):
        w2, b2, l2_other = fit_probe(other, ty, val, vy, 3, warmup=4)
        assert l2_other == l2 and torch.allclose(w2, w, atol=1e-3) and torch.allclose(b2, b, atol=1e-3)
    with_warmup, _, _ = fit_probe(garbled, ty, val, vy, 3, warmup=0, l2=l2)  # those rows counted: another fit
    assert not torch.allclose(with_warmup, w, atol=1e-3)


def test_a_given_l2_weight_is_used_as_it_is():
    (train, ty), (val, vy) = videos(30, 1.5, 0), videos(12, 1.5, 1)
    for l2 in L2:
        assert fit_probe(train, ty, val, vy, 3, l2=l2)[2] == l2

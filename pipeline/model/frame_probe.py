"""Features -> per-frame class scores that ignore time: a linear probe, fitted to convergence.

Why it is there: with a few hundred real clips, a multinomial logistic regression of single frames,
fitted by L-BFGS with its L2 weight chosen on the validation videos, generalises better than anything
stochastic gradient descent makes of the same features (``benchmarks/time_blind_baseline.py``: 0.89 on
pushfit against the GRU's 0.83-0.86), and it errs on other videos than the GRU does. ``ActionRNN`` fuses
its probabilities with the GRU's, frame by frame (``pipeline.model.rnn``), so what streams is still one
score per frame from what has been seen so far. With the summary (``summary_frames``) its rows are the
running means of the frames instead of single frames (``ActionRNN.probe_input``): the time-blind baseline,
which on new scenes generalises where a mean of single frames' probabilities does not (README, "Results").
Fitted as that baseline is: each video weighs the same whatever its length, its warm-up frames left out, and
the checkpoint's probe refitted on the training and validation videos with the L2 weight validation chose.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.timeline import first_scored

L2 = (1e-4, 1e-3, 1e-2, 1e-1)  # candidate weights of the squared-weight penalty, chosen on validation


def fit_linear(
    z: torch.Tensor, y: torch.Tensor, classes: int, l2: float, weight: torch.Tensor | None = None, iters: int = 300
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression of standardised rows ``z`` (N, D) -> weight (C, D) and bias (C,);
    ``weight`` (N,): each row's share of the loss (None: equal)."""
    z, y = z.detach().float(), y.detach().long()
    share = torch.full((len(z),), 1.0 / len(z)) if weight is None else weight.float() / weight.sum()
    w = torch.zeros(classes, z.shape[1], requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (F.cross_entropy(F.linear(z, w, b), y, reduction="none") * share).sum() + l2 * (w**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def video_probs(weight: torch.Tensor, bias: torch.Tensor, videos: list[torch.Tensor], warmup: int = 0) -> torch.Tensor:
    """Each video's (T, D) standardised frames -> its mean per-frame probabilities (V, C), after the
    ``warmup`` frames that a video's score leaves out (``pipeline.timeline.first_scored``)."""
    return torch.stack([F.linear(v[first_scored(len(v), warmup) :].float(), weight, bias).softmax(-1).mean(0) for v in videos])


def fit_probe(
    train: list[torch.Tensor], train_labels: list[int], val: list[torch.Tensor], val_labels: list[int], classes: int,
    warmup: int = 0, l2: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Standardised videos -> the probe's weight and bias, fitted on the training videos' frames after the
    ``warmup`` (the frames their scores read), each video weighing the same whatever its length (as the
    time-blind baseline: a long clip is one example, not hundreds), with the L2 weight that scored best on
    the validation videos (video top-1; ties: the stronger weight), or ``l2`` when given. No validation
    videos: 1e-3."""
    rows = [v[first_scored(len(v), warmup) :] for v in train]
    x = torch.cat(rows)
    y = torch.cat([torch.full((len(r),), int(c)) for r, c in zip(rows, train_labels)])
    share = torch.cat([torch.full((len(r),), 1.0 / len(r)) for r in rows])
    if l2 is not None or not val:
        l2 = L2[1] if l2 is None else l2
        return (*fit_linear(x, y, classes, l2, share), l2)
    truth = torch.tensor([int(c) for c in val_labels])
    best = None
    for l2 in L2:
        w, b = fit_linear(x, y, classes, l2, share)
        p = video_probs(w, b, val, warmup)
        key = (float((p.argmax(1) == truth).float().mean()), l2)
        if best is None or key > best[0]:
            best = (key, w, b, l2)
    return best[1], best[2], best[3]

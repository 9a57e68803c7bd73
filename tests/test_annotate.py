"""The overlay: every person drawn in the colour of their track id, the main subject's label top-left."""

from __future__ import annotations

import numpy as np

from pipeline.annotate import Overlay, Person, color_of, draw


def pixels_of(img: np.ndarray, color) -> np.ndarray:
    return (np.abs(img.astype(int) - np.array(color)).sum(-1) < 30)


def test_each_person_in_their_own_colour_inside_their_box():
    frame = np.full((240, 320, 3), 128, np.uint8)
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0], kp[:, 1], kp[:, 2] = np.linspace(50, 70, 17), np.linspace(90, 200, 17), 1.0
    a = Person(1, np.array([40, 80, 90, 210.0]), kp, "wave", 0.9)
    b = Person(2, np.array([200, 80, 250, 210.0]), kp + [[160, 0, 0]], "walk", 0.8)
    out = draw(frame.copy(), Overlay("wave", 0.9, [("wave", 0.9), ("walk", 0.1)], [a, b], main=1))
    assert color_of(1) != color_of(2)
    in_a, in_b = pixels_of(out, color_of(1)), pixels_of(out, color_of(2))
    assert in_a[80:212, 38:92].sum() > 100 and in_b[80:212, 198:252].sum() > 100  # box and skeleton lines
    assert in_a[:, 150:].sum() < in_a[:, :150].sum() / 10  # a's colour stays with a (the label bar aside)
    assert in_b[:, :150].sum() == 0
    # nobody: no box colours, only the label
    empty = draw(frame.copy(), Overlay("nobody", 0.0, []))
    assert pixels_of(empty, color_of(2)).sum() == 0

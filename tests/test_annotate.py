"""The overlay: every person drawn in the colour of their track id, the main subject's label top-left."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.inference import annotate
from pipeline.inference.annotate import FONT, MIN_SIDE, Overlay, Person, _text, color_of, draw, headline


def pixels_of(img: np.ndarray, color) -> np.ndarray:
    return (np.abs(img.astype(int) - np.array(color)).sum(-1) < 30)


def test_each_person_in_their_own_colour_inside_their_box():
    frame = np.full((360, 480, 3), 128, np.uint8)  # large enough to be drawn as it is
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


@pytest.mark.parametrize("text", ["wave1 0.98", "#12 jack 97%", "21.3 fps"])
def test_text_ink_stays_inside_the_box_the_font_reports(text):
    """With the OpenCV this installs, glyphs drawn with a thick outline ran wider than the text's own box, so
    neighbouring characters overlapped ("wave1 0.98" read "wave10.988"); every drawn pixel now lies in it."""
    img = np.full((60, 300, 3), 128, np.uint8)
    scale = 0.8
    _text(img, text, (20, 40), scale)
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    changed = np.argwhere((img != 128).any(-1))
    assert changed[:, 1].min() >= 20 - 2 and changed[:, 1].max() <= 20 + tw + 2
    assert changed[:, 0].min() >= 40 - th - 2 and changed[:, 0].max() <= 40 + base
    white = (img > 200).all(-1)
    assert white[:, 20 + tw // 2 :].sum() > 10  # the second half of the text is drawn too


def test_small_frames_are_drawn_enlarged_and_legible():
    frame = np.full((144, 180, 3), 128, np.uint8)  # Weizmann's size
    box = np.array([60, 20, 120, 140.0])
    out = draw(frame, Overlay("wave1", 0.98, [("wave1", 0.98), ("wave2", 0.01)], [Person(1, box, None, "wave1", 0.98)], main=1, fps=21.3))
    assert out.shape == (432, 540, 3) and min(out.shape[:2]) >= MIN_SIDE
    box_pixels = np.argwhere((np.abs(out.astype(int) - color_of(1)).sum(-1) < 30))
    assert box_pixels[:, 1].max() >= 3 * 120 - 3  # the person's box scaled with the frame
    green_rows = np.unique(np.argwhere((np.abs(out[:60].astype(int) - (80, 200, 80)).sum(-1) < 60))[:, 0])
    assert len(green_rows) >= 12  # the label is at least 12 pixels high


def test_before_there_is_a_model_only_skeletons_are_drawn():
    """The teaching app's first minutes: people with no label and no track get box and skeleton, no text."""
    frame = np.full((360, 480, 3), 128, np.uint8)
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0], kp[:, 1], kp[:, 2] = np.linspace(250, 270, 17), np.linspace(120, 300, 17), 1.0
    out = draw(frame.copy(), Overlay("", 0.0, [], [Person(0, np.array([230, 110, 300, 310.0]), kp, "", 0.0)]))
    changed = np.abs(out.astype(int) - 128).sum(-1) > 30
    assert changed[108:313, 228:303].sum() > 200  # the box and skeleton
    assert not changed[:100].any() and not changed[:, :220].any()  # no label top-left, no tag above the box
    labelled = draw(frame.copy(), Overlay("wave", 0.9, [], [Person(1, np.array([230, 110, 300, 310.0]), kp, "wave", 0.9)], main=1))
    assert (np.abs(labelled.astype(int) - 128).sum(-1) > 30)[:100].any()  # the check above can see text


@pytest.mark.parametrize("label", ["unknown", "warming up"])
def test_what_is_no_action_is_drawn_grey_without_a_score(label):
    """``unknown``'s score is the top known action's: drawn, it would read as confidence in ``unknown``; a new
    person's first frames (``warming up``) have no label yet."""
    frame = np.full((360, 480, 3), 128, np.uint8)
    box = np.array([230, 110, 300, 310.0])

    def drawn(label: str, score: float) -> np.ndarray:
        return draw(frame.copy(), Overlay(label, score, [("wave", 0.6)], [Person(1, box, None, label, score)], main=1))

    assert np.array_equal(drawn(label, 0.89), drawn(label, 0.12))  # label and person tag alike
    assert not np.array_equal(drawn("wave", 0.89), drawn("wave", 0.12))  # an action keeps its score
    head = slice(0, 28)  # the label's rows, above the bars
    assert not pixels_of(drawn(label, 0.89)[head], annotate.GREEN).any() and pixels_of(drawn("wave", 0.89)[head], annotate.GREEN).any()


def test_the_headline_is_what_the_served_page_shows():
    box = np.array([230, 110, 300, 310.0])
    one, two = [Person(3, box, None, "wave", 0.87)], [Person(3, box, None, "wave", 0.87), Person(4, box, None, "walk", 0.5)]
    assert headline(Overlay("wave", 0.87, [], one, main=3)) == "wave 87%"
    assert headline(Overlay("wave", 0.87, [], two, main=3)) == "#3 wave 87%"  # which person, when there are several
    assert headline(Overlay("unknown", 0.4, [], one, main=3)) == "unknown"
    assert headline(Overlay("warming up", 0.0, [], one, main=3)) == "warming up"
    assert headline(Overlay("nobody", 0.0, [])) == "nobody"
    assert headline(Overlay("idle", 0.9, [], one, main=3, background="idle")) == "no action"
    assert headline(Overlay("", 0.0, [])) == ""  # no model yet



def test_a_persons_tag_never_covers_or_hides_under_the_label_and_bars(monkeypatch):
    """A person just under the top-left bars: their tag used to be drawn where the bars then covered it."""
    texts = []

    def recording(img, text, org, scale, color=(255, 255, 255), thickness=1):
        texts.append((text, scale, real(img, text, org, scale, color, thickness)))
        return texts[-1][2]

    real = annotate._text
    monkeypatch.setattr(annotate, "_text", recording)
    frame = np.full((360, 480, 3), 128, np.uint8)
    near = Person(12, np.array([20, 70, 120, 300.0]), None, "walk", 0.8)  # box top just under the bars
    corner = Person(3, np.array([5, 5, 60, 100.0]), None, "run", 0.6)  # box under the whole panel
    draw(frame, Overlay("walk", 0.8, [("walk", 0.8), ("run", 0.15), ("jack", 0.05)], [near, corner], main=12))
    tag_scale = 0.45 * 360 / 480
    tags = [r for t, sc, r in texts if t.startswith("#") and sc == tag_scale]
    panel = [r for t, sc, r in texts if not (t.startswith("#") and sc == tag_scale)]
    px1, py1 = max(r[2] for r in panel), max(r[3] for r in panel)  # the label and bars' corner
    assert len(tags) == 2 and len(panel) == 4
    for x0, y0, x1, y1 in tags:
        assert 0 <= x0 and x1 <= 480 and 0 <= y0 and y1 <= 360
        assert x0 >= px1 or y0 >= py1  # clear of the panel
    assert not (tags[0][0] < tags[1][2] and tags[1][0] < tags[0][2] and tags[0][1] < tags[1][3] and tags[1][1] < tags[0][3])

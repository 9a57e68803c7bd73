"""Composites: people keyed out of single-person clips land where they are sent, at their own size."""

from __future__ import annotations

import numpy as np

from pipeline.data.composite import background, best_background, centre_x, composite, foreground


def clip(x: int, frames: int = 6, bg_level: int = 120, size=(60, 100)) -> np.ndarray:
    """A dark 10x30 'person' at column ``x`` (moving one pixel a frame) on a flat background."""
    h, w = size
    out = np.full((frames, h, w, 3), bg_level, np.uint8)
    for t in range(frames):
        out[t, 20:50, x + t : x + t + 10] = 20
    return out


def test_background_is_the_empty_scene_and_the_best_match_is_chosen():
    walker = np.concatenate([clip(x, frames=1) for x in range(0, 90, 10)])  # passes through the frame
    assert (background([walker]) == 120).all()
    scenes = [np.full((60, 100, 3), v, np.uint8) for v in (60, 118, 200)]
    assert best_background(clip(40), scenes).mean() == 118


def test_people_are_moved_and_their_masks_say_who_is_where():
    bg = np.full((60, 100, 3), 120, np.uint8)
    a, b = clip(10), clip(60)
    assert abs(centre_x(a, bg) - (10 + 2.5 + 4.5)) < 1.5  # mask grown by a few pixels
    frames, masks = composite([a, b], [10, -10], bg, masks=True)
    assert frames.shape == a.shape and masks.shape == (2, *a.shape[:3])
    # person a now starts at column 20, person b at 50: dark there, background elsewhere
    assert (frames[0, 25:45, 20:30] == 20).all() and (frames[0, 25:45, 50:60] == 20).all()
    assert (frames[0, :, 70:] == 120).all() and (frames[0, :, 35:45] == 120).all()
    assert masks[0, 0, 30, 25] and not masks[1, 0, 30, 25] and masks[1, 0, 30, 55]
    assert not foreground(bg[None], bg).any()

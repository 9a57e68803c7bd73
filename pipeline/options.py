"""Option values checked where they are taken, so a wrong one is a one-line error naming its range; and the
defaults the command lines show, here so that ``--help`` answers without loading torch."""

from __future__ import annotations

import math
from collections.abc import Iterable

from pipeline.errors import UserError

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")  # what runs the models (pipeline.inference.runtime)
MAX_PEOPLE = 16  # default cap on people per frame: a crowd beyond this is rarely about one action each
TRACKERS = ("bytetrack", "botsort")  # Ultralytics' trackers, by their config names


class OptionError(UserError, ValueError):
    """An option value outside its range, or not one of its choices."""


def check_range(name: str, value: float | None, low: float | None = None, high: float | None = None, *, above: bool = False) -> None:
    """``value`` (None: not given, fine) within ``[low, high]`` (``(low, high]`` with ``above``)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"{name} must be a number, got {value!r}")
    bad = math.isnan(value) or (low is not None and (value <= low if above else value < low)) or (high is not None and value > high)
    if bad:
        parts = ([f"{'>' if above else '>='} {low}"] if low is not None else []) + ([f"<= {high}"] if high is not None else [])
        raise OptionError(f"{name} must be {' and '.join(parts)}, got {value}")


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    choices = list(choices)
    if value not in choices:
        raise OptionError(f"{name} '{value}' is not one of {', '.join(map(str, choices))}")

"""One-line errors for the command-line tools: the user's mistakes are not tracebacks."""

from __future__ import annotations

import sys
from collections.abc import Callable

from pipeline.cache import CacheError
from pipeline.checkpoint import CheckpointError
from pipeline.export import ExportError
from pipeline.features import DeviceError
from pipeline.options import OptionError
from pipeline.video import VideoError
from pipeline.videoset import DatasetError
from pipeline.weights import WeightsError

USER_ERRORS: tuple[type[BaseException], ...] = (WeightsError, VideoError, DatasetError, CheckpointError, DeviceError, OptionError, CacheError, ExportError)


def run_cli(main: Callable[[], object], extra: tuple[type[BaseException], ...] = ()) -> None:
    """Run ``main``; a known user error prints ``error: ...`` on one line and exits with status 2."""
    try:
        main()
    except (*USER_ERRORS, *extra) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)

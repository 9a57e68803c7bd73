"""One-line errors for the command-line tools: the user's mistakes are not tracebacks."""

from __future__ import annotations

import sys
from collections.abc import Callable

from pipeline.data.cache import CacheError
from pipeline.data.features import DeviceError
from pipeline.data.video import VideoError
from pipeline.data.videoset import DatasetError
from pipeline.data.weights import WeightsError
from pipeline.inference.export import ExportError
from pipeline.model.checkpoint import CheckpointError
from pipeline.options import OptionError

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

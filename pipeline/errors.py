"""One-line errors for the command-line tools: the user's mistakes are not tracebacks."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can mend (a wrong path, option, file or checkpoint): the command-line tools print it
    on one line, with no traceback. Each module's own error derives from it, so this module imports nothing
    heavy and a tool says what is wrong before torch and the models load."""


def run_cli(main: Callable[[], object], extra: tuple[type[BaseException], ...] = ()) -> None:
    """Run ``main``; a ``UserError`` (or one of ``extra``) prints ``error: ...`` on one line and exits with status 2.

    Once ``main`` is over, a Ctrl-C or SIGTERM (one arriving while the interpreter shuts down, in an exit
    handler) ends the process at once with 130 / 143: the work is done or cleaned up, and a
    ``KeyboardInterrupt`` raised inside an exit handler would print a traceback and exit 0."""
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed escaped, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        main()
    except (UserError, *extra) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _exit_now)


def _exit_now(signum: int, _frame) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, RuntimeError, ValueError):  # a write the signal interrupted, or a closed stream
            pass
    os._exit(128 + signum)

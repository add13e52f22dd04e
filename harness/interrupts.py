"""Ctrl-C that always stops a run.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be. If that is
inside a ``__del__`` (a library's object being collected), Python prints "Exception ignored in ...
KeyboardInterrupt" and carries on, and the run would finish as if nothing happened. The handler
installed here also remembers the interrupt, and the runner calls ``check()`` at safe points (before
each chunk), which raises it again, so the interrupt is never lost.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_pending = False


def _on_sigint(signum: int, frame: Any) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


def install() -> None:
    """Use the remembering handler for SIGINT (main thread only; elsewhere this does nothing)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def check() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived that has not stopped anything yet."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt


def clear() -> None:
    """The interrupt was handled (the command is ending with its message)."""
    global _pending
    _pending = False

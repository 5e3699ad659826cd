"""Run the real crmsync CLI and SIGKILL it at an exact point of its own code.

    python tests/killpoint.py WHEN:POINT:N [-- crmsync arguments]

kills the process (``os.kill(getpid(), SIGKILL)``: nothing is flushed, no handler runs)
right ``before`` or ``after`` the Nth call of ``POINT``:

* ``checkpoint``: the ledger checkpoint after a batch's answer (``before:checkpoint:3`` is
  "the third answer was received but not checkpointed");
* ``record``: recording a destination's figures in history once its push is done;
* ``replace``: the csv destination putting its written temp file in place.

Only the test harness patches; crmsync itself has no test hook.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

POINTS = {
    "checkpoint": ("crmsync.sync.store.ledger", "Ledger", "checkpoint"),
    "record": ("crmsync.sync.store.history", "History", "record_destination"),
    "replace": ("crmsync.connectors.files", "CsvDestination", "_replace"),
}


def arm(spec: str) -> None:
    when, point, nth = spec.split(":")
    module, cls_name, attr = POINTS[point]
    cls = getattr(importlib.import_module(module), cls_name)
    original = getattr(cls, attr)
    calls = 0

    def patched(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == int(nth) and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        out = original(*args, **kwargs)
        if calls == int(nth) and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(cls, attr, patched)


if __name__ == "__main__":
    arm(sys.argv[1])
    args = sys.argv[2:]
    if args and args[0] == "--":
        args = args[1:]
    from crmsync.cli import main

    sys.argv = ["crmsync", *args]
    main()

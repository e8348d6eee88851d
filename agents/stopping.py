"""Stopping a run on SIGINT / SIGTERM at a consistent point, never mid-save (:class:`StopRequest`)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT, SIGTERM) after saving what it had; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum: int, frame: Any) -> None:
    """The CLI's SIGTERM handler outside :func:`train`: stop as on Ctrl-C."""
    raise Interrupted(signum)


class StopRequest:
    """SIGINT / SIGTERM during a run: stop cleanly at a consistent point, never mid-save.

    The first signal asks the run to stop: during a rollout at the next env step (the rollout
    is dropped), during an update once the update is done; then the model is saved. A second
    one only says so (a double Ctrl-C must not cost the save); a third stops at once without
    saving (the last checkpoint on disk is kept). While a checkpoint is written every signal
    waits for the write to end. Installed only in the main thread, for the signals whose handler
    is Python's Ctrl-C default (or the CLI's); a signal the process ignores stays ignored.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self.saving = False
        self.aborted = False
        self.saved_update = -1  # the update of the last checkpoint this process wrote
        self._old: dict[int, Any] = {}

    def install(self, active: bool) -> None:
        if not active or threading.current_thread() is not threading.main_thread():
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(s) in (signal.default_int_handler, raise_interrupted):
                self._old[s] = signal.signal(s, self._handle)

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            print(f"{name}: stopping after the current step, then saving (a third signal stops at once, "
                  "without saving)", file=sys.stderr, flush=True)
        elif self.saving:
            print(f"{name}: saving the checkpoint, please wait", file=sys.stderr, flush=True)
        elif self.count == 2:
            print(f"{name}: already stopping (the current step ends, then the model is saved); a third signal stops "
                  "at once, without saving", file=sys.stderr, flush=True)
        else:
            self.aborted = True
            raise KeyboardInterrupt  # not Interrupted: nothing is saved on the way out

    @property
    def requested(self) -> bool:
        return self.signum is not None


def stop_callback(stop: StopRequest) -> Any:
    """An SB3 callback that ends ``learn`` at the next env step once a stop is requested."""
    from stable_baselines3.common.callbacks import BaseCallback

    class StopOnSignal(BaseCallback):
        def _on_step(self) -> bool:
            return not stop.requested

    return StopOnSignal()

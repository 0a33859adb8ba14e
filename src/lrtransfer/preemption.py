"""Checkpoint on Slurm's warning signal, at a step boundary, then let submitit requeue the job.

Slurm sends SIGUSR2 ahead of a timeout or preemption (hydra-submitit-launcher asks for it with
``--signal=USR2@<signal_delay_s>``). submitit's own handler requeues and exits immediately, which
could land in the middle of an optimizer step. This guard only raises a flag; the training loop
checks it after each step, saves a consistent checkpoint, and then hands the signal to the handler
that was installed before (submitit's), which requeues the job and exits.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Requeued(SystemExit):
    """Raised (via submitit's exit) after a checkpoint was saved and the job handed back to Slurm."""


class PreemptionGuard:
    def __init__(self, signum: int = signal.SIGUSR2):
        self.signum = signum
        self.requested = False
        self._previous = None
        self._installed = False

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._flag)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(self.signum, self._previous)
            self._installed = False

    def _flag(self, signum, frame) -> None:
        self.requested = True

    def hand_over(self) -> None:
        """Restore the previous handler and run it (submitit: requeue + exit); never returns."""
        previous = self._previous
        self.__exit__()
        if callable(previous):
            try:
                previous(self.signum, None)
            except SystemExit as exc:
                raise Requeued(exc.code) from None
        raise SystemExit(f"stopped on {signal.Signals(self.signum).name} after saving a checkpoint; "
                         "run the same job again to resume")


class Terminated(SystemExit):
    """SIGTERM arrived (``kill``, ``timeout``, a stopping container): the run ends KILLED, not RUNNING."""


@contextmanager
def terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` inside the block, so that the run is closed on the way out.

    Only where nothing else handles SIGTERM (its default action would kill the process at once and leave
    the MLflow run RUNNING); a handler already installed, such as submitit's under Slurm, is left alone.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        _received.append(signum)
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
        raise_if_terminated()
    finally:
        signal.signal(signal.SIGTERM, previous)
        _received.clear()


# SIGTERMs received inside terminate_as_exit.  Python swallows an exception raised while it runs a finalizer or
# a weakref callback ("Exception ignored in ..."), so the handler's Terminated can be lost; the flag is not.
_received: list[int] = []


def raise_if_terminated() -> None:
    """Raise :class:`Terminated` if SIGTERM arrived in a :func:`terminate_as_exit` block, even if its first
    raise was swallowed; long loops call this at safe points (``make reproduce`` before each stage)."""
    if _received:
        raise Terminated(128 + _received[0])

"""Errors that end a run with one line naming the bad value (no traceback wall)."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line."""


class ConfigError(UserError):
    pass


class DataUnavailableError(UserError):
    pass


class TrackingUnavailableError(UserError):
    pass


def one_line(exc: BaseException) -> str:
    """Condense an exception (including Hydra/OmegaConf composition errors) to one line.

    OmegaConf errors carry ``full_key``; Hydra wraps them, so walk the cause chain for the most
    specific message.
    """
    chain = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        key = getattr(e, "full_key", None)
        if key:
            msg = str(getattr(e, "msg", None) or e).strip().splitlines()[0]
            return f"{key}: {msg}"
    text = str(exc).split("Config search path")[0]  # Hydra appends its whole search path
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " ".join(lines) if lines else type(exc).__name__

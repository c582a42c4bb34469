"""Logging: structlog over the standard library, for our code and for py-libp2p.

Call :func:`configure_logging` once, early, before anything imports libp2p:
libp2p's module-level ``logging.debug()`` calls would otherwise install a root
handler of their own. Importing libp2p also resets its ``libp2p`` logger (no
handler, no propagation), so :mod:`emrp2p.net` calls :func:`route_libp2p` right
after its import to send libp2p's records through our handler again.

libp2p logs ordinary events (a stranger's failed handshake, a peer that went
away) at ERROR; a filter demotes its ERROR records to WARNING and its known
routine messages to DEBUG, so that an operator's ERROR means something.
This module must not import libp2p (``import emrp2p`` stays light).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging", "route_libp2p", "get_logger"]

LIBP2P = "libp2p"

# Messages libp2p logs above their weight; matched by prefix of the format string.
_ROUTINE_LIBP2P = (
    "failed to upgrade security",
    "fail to upgrade mux",
    "Error handling incoming connection",
    "Received an invalid-signed-record",
    "Stream error for peer",
    "fail to read from peer",
    "MultiselectClient handshake",
    "Failed to open stream to peer",
)

_state: dict[str, Any] = {"level": logging.INFO, "libp2p_level": logging.WARNING, "configured": False}


class _Libp2pDemote(logging.Filter):
    """Demote libp2p's ERROR to WARNING and its routine chatter to DEBUG."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(LIBP2P):
            return True
        msg = record.msg if isinstance(record.msg, str) else ""
        if record.levelno > logging.DEBUG and msg.startswith(_ROUTINE_LIBP2P):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        elif record.levelno >= logging.ERROR and record.levelno < logging.CRITICAL:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return record.levelno >= self.threshold


def _level(name: str | int) -> int:
    if isinstance(name, int):
        return name
    value = logging.getLevelName(name.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {name!r}")
    return value


def configure_logging(
    json: bool = False,
    level: str | int = "INFO",
    *,
    libp2p_level: str | int = "WARNING",
    stream: TextIO | None = None,
) -> None:
    """Send every log record (structlog's and stdlib's) to one handler.

    ``json=True`` writes one JSON object per line (production); otherwise a
    readable console format. ``libp2p_level`` bounds libp2p's own loggers,
    which are far too chatty below WARNING. Safe to call again (reconfigures).
    """
    lvl = _level(level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_Libp2pDemote(lvl))

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    _state.update(level=lvl, libp2p_level=max(_level(libp2p_level), lvl), configured=True)
    route_libp2p()


def route_libp2p() -> None:
    """Make libp2p's loggers propagate to our handler at our levels.

    Idempotent; called by :func:`configure_logging` and again by
    :mod:`emrp2p.net` after ``import libp2p`` (which resets the logger).
    """
    lib = logging.getLogger(LIBP2P)
    for old in list(lib.handlers):
        lib.removeHandler(old)
    lib.propagate = True
    lib.setLevel(_state["libp2p_level"])
    # Children that libp2p pins to a level of their own (auto_connector: INFO).
    for name, child in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith(LIBP2P + ".") and isinstance(child, logging.Logger):
            child.setLevel(logging.NOTSET)
            child.propagate = True
            for old in list(child.handlers):
                child.removeHandler(old)


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name`` (a stdlib logger underneath)."""
    return structlog.stdlib.get_logger(name)

"""retake's progress and result lines go through Python logging, logger ``retake``.

Under Hydra the job's logging configuration takes them (its console handler and the job's
``<job>.log`` file, so a run's log holds what the terminal showed); elsewhere (``retake ask``,
``python -m retake.harness.runner``, scripts, notebooks) a stderr handler printing
``[retake] message`` is added on first use, unless the application configured logging itself.
tqdm progress bars stay on the terminal only.
"""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("retake")
LOGGER.setLevel(logging.INFO)
_HANDLER: logging.Handler | None = None


def get_logger() -> logging.Logger:
    """The ``retake`` logger, with a ``[retake] message`` stderr handler when nothing else would
    show its lines (no handler on it or on the root logger)."""
    global _HANDLER
    if _HANDLER is None and not LOGGER.handlers and not logging.getLogger().handlers:
        _HANDLER = logging.StreamHandler(sys.stderr)
        _HANDLER.setFormatter(logging.Formatter("[retake] %(message)s"))
        LOGGER.addHandler(_HANDLER)
    return LOGGER


def info(message: str) -> None:
    get_logger().info(message)


def warning(message: str) -> None:
    get_logger().warning(message)


def error(message: str) -> None:
    get_logger().error(message)

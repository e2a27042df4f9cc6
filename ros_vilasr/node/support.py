"""Small ROS-side helpers of the node: heap trimming after frame evictions, the bridge from the
core's Python logging to the ROS logger, and the guard around lifecycle transitions."""

from __future__ import annotations

import functools
import logging

from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn


def _malloc_trim():
    """glibc's ``malloc_trim`` (None elsewhere). Evicted frames are megabytes each, and glibc keeps
    such freed heap pages (its mapping threshold has grown past frame size by then): without a
    trim after evictions, RSS creeps above the buffer budget."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


MALLOC_TRIM = _malloc_trim()


class RosLogHandler(logging.Handler):
    """Sends the core's Python log records (engine failures, ...) to the node's ROS logger."""

    def __init__(self, ros_logger):
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name}: {self.format(record)}"
        if record.levelno >= logging.ERROR:
            self.ros_logger.error(text)
        elif record.levelno >= logging.WARNING:
            self.ros_logger.warning(text)
        else:
            self.ros_logger.info(text)


def transition(method):
    """Lifecycle callbacks: rclpy turns an exception into a silent ERROR; log it and fail instead."""
    @functools.wraps(method)
    def wrapper(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return method(self, state)
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"{method.__name__} failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
    return wrapper

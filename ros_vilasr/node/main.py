"""``vilasr_node`` executable: the lifecycle node on a multi-threaded executor.

The executor spins on its own thread from the start, so the lifecycle services answer while
``autostart`` configures and activates (activation may load a large model for minutes).
"""

from __future__ import annotations

import sys
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

from .params import MAX_PENDING_LIMIT
from .vilasr_node import VilasrNode


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=sys.argv if args is None else args)
    node = VilasrNode()
    # Each pending goal's execute callback waits on an executor thread while the worker reasons;
    # the spare threads keep frames, cancels, lifecycle and diagnostics flowing meanwhile.
    executor = MultiThreadedExecutor(num_threads=MAX_PENDING_LIMIT + 4)
    executor.add_node(node)

    def spin() -> None:
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass

    spinner = threading.Thread(target=spin, name="executor", daemon=True)
    spinner.start()
    try:
        if node.get_parameter("autostart").value:
            node.autostart()
        while rclpy.ok() and spinner.is_alive():
            spinner.join(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        node.release()  # cancel queries, free the model
        executor.shutdown()
        spinner.join(5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

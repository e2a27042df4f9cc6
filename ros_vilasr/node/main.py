"""``vilasr_node`` executable: the lifecycle node on a multi-threaded executor.

The executor spins on its own thread from the start, so the lifecycle services answer while
``autostart`` configures and activates from the main thread (activation may load a large model
for minutes).
SIGINT / SIGTERM are handled here rather than by rclpy, so that the node can cancel its queries
and free the model while ROS is still up, then shut down in the order rclpy needs (executor,
its thread, the node, the context).
"""

from __future__ import annotations

import signal
import sys
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from .vilasr_node import VilasrNode


def main(args: list[str] | None = None) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
    node = VilasrNode()
    # One executor thread is enough, because no callback blocks (reasoning runs on the node's
    # worker thread), and it is what keeps camera ingest cheap: rclpy's MultiThreadedExecutor
    # costs about three times the CPU per frame and drops 720p frames at 2 x 30 Hz.
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass
        finally:
            stop.set()

    spinner = threading.Thread(target=spin, name="executor", daemon=True)
    spinner.start()
    try:
        if node.get_parameter("autostart").value:
            node.autostart()
        while not stop.wait(0.5):
            pass
    finally:
        node.release()  # cancel queries, free the model: ROS is still up to say so
        executor.shutdown()
        spinner.join(5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

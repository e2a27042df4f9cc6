"""``vilasr_bag_player``: replay rosbag2 camera recordings (MCAP or sqlite3) into live topics.

Messages are read with ``rosbags`` (no rosbag2_py on PyPI) and published as the recorded CDR bytes
through rclpy, so data and headers arrive exactly as recorded, at the recorded rate scaled by
``--rate``. Each topic's message class is looked up from its type name and checked once against
the first recorded message, so a bag whose types this ROS installation cannot read fails clearly.

    vilasr_bag_player BAG [--rate 1.0] [--loop] [--remap /a:=/b ...] [--reliable] [--topics T ...]

Exit codes: 0 played (or stopped by Ctrl-C / SIGTERM), 2 bag not found or bad arguments,
3 bag unreadable (corrupt, truncated, unknown storage, types not installed), 128 + signal when a
stop request had to cut a hanging shutdown short.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("vilasr_bag_player")

EXIT_OK, EXIT_MISSING, EXIT_UNREADABLE = 0, 2, 3
# DDS teardown can hang when a peer died at the same moment (seen with a parent-death SIGTERM
# reaching both ends); after a stop request the process exits within this grace period regardless.
SHUTDOWN_GRACE_S = 10.0


class BagError(Exception):
    """The bag cannot be played; ``code`` is the process exit status."""

    def __init__(self, message: str, code: int = EXIT_UNREADABLE):
        super().__init__(message)
        self.code = code


@dataclass
class Track:
    """One recorded topic and where it goes."""

    topic: str  # as recorded
    out_topic: str  # after remapping
    msgtype: str  # e.g. sensor_msgs/msg/Image
    count: int
    connections: list


def message_class(msgtype: str):
    """``pkg/msg/Name`` (or ``pkg/Name``) -> the generated rclpy message class."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise BagError(f"malformed message type name {msgtype!r}")
    pkg, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError):
        raise BagError(f"message type {msgtype} is not installed in this ROS environment") from None


def parse_remaps(items: list[str]) -> dict[str, str]:
    remaps = {}
    for item in items:
        src, sep, dst = item.partition(":=")
        if not sep or not src or not dst:
            raise BagError(f"bad remap {item!r}: expected /from:=/to", EXIT_MISSING)
        remaps[src] = dst
    return remaps


def open_bag(path: Path):
    """An open rosbags Reader, or a BagError saying why not."""
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise BagError(f"bag {str(path)!r} does not exist", EXIT_MISSING)
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises many types for damaged files
        raise BagError(f"cannot read bag {str(path)!r}: {type(exc).__name__}: {exc}") from None
    return reader


def plan_tracks(reader, remaps: dict[str, str], only: list[str] | None) -> list[Track]:
    tracks = []
    for topic, info in sorted(reader.topics.items()):
        if only and topic not in only:
            continue
        if info.msgtype is None:
            raise BagError(f"topic {topic} mixes several message types")
        tracks.append(Track(topic, remaps.get(topic, topic), info.msgtype, info.msgcount, info.connections))
    if only and (missing := sorted(set(only) - {t.topic for t in tracks})):
        raise BagError(f"topics not in the bag: {', '.join(missing)}", EXIT_MISSING)
    if not tracks:
        raise BagError("the bag holds no messages to play")
    return tracks


class Player:
    """Publishes a bag's messages at their recorded times (scaled by ``rate``)."""

    def __init__(self, node, reader, tracks: list[Track], *, rate: float, reliable: bool,
                 restamp: bool, stop: threading.Event):
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
        self.reader, self.rate, self.restamp, self.stop = reader, rate, restamp, stop
        self.tracks = {t.topic: t for t in tracks}
        self.classes = {t.topic: message_class(t.msgtype) for t in tracks}
        self.publishers = {t.topic: node.create_publisher(self.classes[t.topic], t.out_topic, qos)
                           for t in tracks}
        self._checked: set[str] = set()
        self.published = 0

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Block until every output topic has a subscriber (or timeout): frames sent before
        discovery completes are lost on volatile topics."""
        deadline = time.monotonic() + timeout_s
        while not self.stop.is_set():
            if all(p.get_subscription_count() > 0 for p in self.publishers.values()):
                return True
            if time.monotonic() >= deadline:
                return False
            self.stop.wait(0.05)
        return False

    def _decode_check(self, topic: str, raw: bytes):
        from rclpy.serialization import deserialize_message

        try:
            return deserialize_message(raw, self.classes[topic])
        except Exception as exc:  # noqa: BLE001
            raise BagError(f"topic {topic}: recorded data does not deserialise as "
                           f"{self.classes[topic].__name__}: {exc}") from None

    def play_once(self, progress: bool = False) -> bool:
        """One pass over the bag; False when stopped early."""
        from rclpy.serialization import serialize_message
        from tqdm import tqdm

        connections = [c for t in self.tracks.values() for c in t.connections]
        total = sum(t.count for t in self.tracks.values())
        bar = tqdm(total=total, unit="msg", desc="playing", disable=not progress)
        wall0, bag0, offset_ns = time.monotonic(), None, 0
        try:
            for conn, stamp, raw in self.reader.messages(connections=connections):
                if bag0 is None:
                    bag0 = stamp
                    offset_ns = time.time_ns() - stamp
                wait = wall0 + (stamp - bag0) / 1e9 / self.rate - time.monotonic()
                if wait > 0 and self.stop.wait(wait):
                    return False
                if self.stop.is_set():
                    return False
                topic = conn.topic
                data = bytes(raw)
                if topic not in self._checked or self.restamp:
                    msg = self._decode_check(topic, data)
                    self._checked.add(topic)
                    if self.restamp and hasattr(msg, "header"):
                        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec + offset_ns
                        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
                        data = serialize_message(msg)
                self.publishers[topic].publish(data)
                self.published += 1
                bar.update()
        except BagError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged chunk surfaces only while reading
            raise BagError(f"bag became unreadable during playback: {type(exc).__name__}: {exc}") from None
        finally:
            bar.close()
        return True

    def flush(self, timeout_s: float = 3.0) -> None:
        """Before the publishers go away: reliable subscribers acknowledge everything (or time
        out); best-effort samples get a moment to leave, or the last frames are lost."""
        from rclpy.duration import Duration

        for topic, pub in self.publishers.items():
            if not pub.wait_for_all_acked(Duration(seconds=timeout_s)):
                log.warning("%s: not every subscriber acknowledged the last messages", topic)
        time.sleep(0.2)

    def loop_gap_s(self) -> float:
        """Pause between loops: one mean message interval, so the seam keeps the recorded rate."""
        counts = max((t.count for t in self.tracks.values()), default=1)
        duration = self.reader.duration / 1e9
        return duration / max(counts - 1, 1) / self.rate if counts > 1 else 0.1 / self.rate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vilasr_bag_player", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", type=Path, help="rosbag2 directory, or a single .mcap / .db3 file")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="play again from the start when done")
    p.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                   help="publish recorded topic FROM on TO (repeatable)")
    p.add_argument("--topics", nargs="+", help="play only these recorded topics")
    p.add_argument("--reliable", action="store_true",
                   help="publish with reliable QoS (default: sensor-data QoS, best effort)")
    p.add_argument("--restamp", action="store_true",
                   help="shift header stamps to the current time (data otherwise exactly as recorded)")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SECONDS",
                   help="before playing, wait up to SECONDS for every topic to have a subscriber")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Arguments after --ros-args belong to rclpy (native remaps -r a:=b work too).
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    args = build_parser().parse_args(argv[:len(argv) - len(ros_args)])
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="[%(name)s] %(levelname)s: %(message)s")
    if args.rate <= 0:
        log.error("--rate must be > 0")
        return EXIT_MISSING
    try:
        remaps = parse_remaps(args.remap)
        reader = open_bag(args.bag)
        tracks = plan_tracks(reader, remaps, args.topics)
    except BagError as exc:
        log.error("%s", exc)
        return exc.code

    # A player feeds a robot's stack: it joins the caller's ROS network as configured (the demo,
    # tests and benchmarks that start it pass an isolated environment).
    log.info("ROS_DOMAIN_ID=%s, discovery range %s", os.environ.get("ROS_DOMAIN_ID", "0 (default)"),
             os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "default"))
    for t in tracks:
        log.info("%s (%s, %d msgs)%s", t.topic, t.msgtype, t.count,
                 f" -> {t.out_topic}" if t.out_topic != t.topic else "")
    return _run(args, reader, tracks, ros_args)


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGINT / SIGTERM set ``stop`` so the loop finishes its publish and shuts down in order; a
    second signal, or a shutdown that outlasts SHUTDOWN_GRACE_S, ends the process at once."""
    def handler(signum, _frame):
        if stop.is_set():
            os._exit(128 + signum)
        stop.set()
        watchdog = threading.Timer(SHUTDOWN_GRACE_S, os._exit, (128 + signum,))
        watchdog.daemon = True
        watchdog.start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _run(args, reader, tracks: list[Track], ros_args: list[str]) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    _stop_on_signals(stop)
    rclpy.init(args=["vilasr_bag_player", *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("vilasr_bag_player")
    code = EXIT_OK
    try:
        player = Player(node, reader, tracks, rate=args.rate, reliable=args.reliable,
                        restamp=args.restamp, stop=stop)
        if args.wait_for_subscribers > 0 and not player.wait_for_subscribers(args.wait_for_subscribers):
            log.warning("not every topic has a subscriber after %.1f s; playing anyway",
                        args.wait_for_subscribers)
        passes = 0
        while player.play_once(progress=args.progress):
            passes += 1
            log.info("pass %d done: %d messages published", passes, player.published)
            if not args.loop or stop.wait(player.loop_gap_s()):
                break
        player.flush()
    except BagError as exc:
        log.error("%s", exc)
        code = exc.code
    finally:
        node.destroy_node()
        reader.close()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())

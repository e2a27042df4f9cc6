"""vilasr_bag_player: recordings round-trip over real DDS at their recorded rate.

Bags are written with ros_vilasr.node.bag_writer (rosbags), played by the player in its own process
(`python -m ros_vilasr.node.bag_player`), and received here by an rclpy subscriber. Isolation
(loopback discovery, a domain of this run's own) comes from tests/conftest.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("rosbags")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ros_vilasr.node.bag_player import EXIT_MISSING, EXIT_UNREADABLE  # noqa: E402
from ros_vilasr.node.bag_writer import ImageBagWriter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOPIC = "/test_cam/image_raw"
N_FRAMES, RATE_HZ = 30, 20.0  # 1.45 s between first and last frame
START_NS = 1_600_000_000 * 10**9
W, H = 32, 24
TIMING_TOLERANCE = 0.25  # total duration within +-25%: loose enough for a loaded 2-core machine


def frame_pixels(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def stamp_ns(i: int) -> int:
    return START_NS + int(i * 1e9 / RATE_HZ)


def write_bag(path: Path, storage: str, n: int = N_FRAMES) -> Path:
    with ImageBagWriter(path, storage=storage) as bag:
        for i in range(n):
            bag.write_image(TOPIC, frame_pixels(i), stamp_ns(i), frame_id=f"cam_{i % 3}")
    return path


def player_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def run_player(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ros_vilasr.node.bag_player", *args], env=player_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def start_player(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ros_vilasr.node.bag_player", *args], env=player_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


class Receiver:
    """An rclpy subscriber on its own context and executor thread, recording arrival times."""

    def __init__(self, topic: str, reliable: bool):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("bag_player_test_receiver", context=self.context)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
        self.messages: list[tuple[float, Image]] = []
        self.node.create_subscription(Image, topic, lambda m: self.messages.append((time.monotonic(), m)), qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float) -> list[tuple[float, Image]]:
        end = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < end:
            time.sleep(0.02)
        return list(self.messages)

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(5)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def receiver_factory():
    made = []

    def make(topic: str = TOPIC, reliable: bool = True) -> Receiver:
        made.append(Receiver(topic, reliable))
        return made[-1]

    yield make
    for r in made:
        r.close()


def assert_identical(received: list[tuple[float, Image]], n: int = N_FRAMES) -> None:
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in received]
    assert stamps == [stamp_ns(i) for i in range(n)], "frames missing, duplicated or out of order"
    for i, (_, m) in enumerate(received):
        assert m.header.frame_id == f"cam_{i % 3}"
        assert (m.width, m.height, m.encoding, m.step, m.is_bigendian) == (W, H, "rgb8", W * 3, 0)
        assert bytes(m.data) == frame_pixels(i).tobytes()


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_at_recorded_rate(tmp_path, receiver_factory, storage):
    bag = write_bag(tmp_path / "bag", storage)
    receiver = receiver_factory(reliable=True)
    done = run_player(str(bag), "--reliable", "--wait-for-subscribers", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    received = receiver.wait_for(N_FRAMES, timeout=10)
    assert_identical(received)
    recorded = (stamp_ns(N_FRAMES - 1) - stamp_ns(0)) / 1e9
    played = received[-1][0] - received[0][0]
    assert abs(played - recorded) <= TIMING_TOLERANCE * recorded, (played, recorded)


def test_rate_factor_and_single_storage_file(tmp_path, receiver_factory):
    """--rate 2 halves the duration; a bare .mcap file (no metadata.yaml) plays too."""
    bag = write_bag(tmp_path / "bag", "mcap")
    receiver = receiver_factory(reliable=True)
    done = run_player(str(bag / "bag.mcap"), "--reliable", "--rate", "2", "--wait-for-subscribers", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    received = receiver.wait_for(N_FRAMES, timeout=10)
    assert_identical(received)
    expected = (stamp_ns(N_FRAMES - 1) - stamp_ns(0)) / 1e9 / 2
    played = received[-1][0] - received[0][0]
    assert abs(played - expected) <= TIMING_TOLERANCE * expected, (played, expected)


def test_remap_with_sensor_data_qos(tmp_path, receiver_factory):
    """--remap sends the recorded topic elsewhere; the default QoS (best effort) reaches a
    sensor-data subscriber, and nothing arrives on the recorded name."""
    bag = write_bag(tmp_path / "bag", "mcap")
    remapped = receiver_factory("/elsewhere/image_raw", reliable=False)
    original = receiver_factory(TOPIC, reliable=False)
    done = run_player(str(bag), "--remap", f"{TOPIC}:=/elsewhere/image_raw", "--wait-for-subscribers", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    received = remapped.wait_for(N_FRAMES, timeout=10)
    # Best effort may lose a frame on a loaded machine; order and content must still hold.
    assert len(received) >= N_FRAMES - 3
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in received]
    assert stamps == sorted(stamps) and set(stamps) <= {stamp_ns(i) for i in range(N_FRAMES)}
    assert original.messages == []


def test_loop_replays_until_stopped(tmp_path, receiver_factory):
    bag = write_bag(tmp_path / "bag", "mcap", n=5)
    receiver = receiver_factory(reliable=True)
    player = start_player(str(bag), "--reliable", "--loop", "--rate", "4", "--wait-for-subscribers", "20")
    try:
        received = receiver.wait_for(12, timeout=30)
    finally:
        player.send_signal(signal.SIGINT)
        out, _ = player.communicate(timeout=20)
    assert player.returncode == 0, out
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in received[:10]]
    assert stamps == [stamp_ns(i) for i in range(5)] * 2


def test_restamp_shifts_headers_to_now_and_keeps_spacing(tmp_path, receiver_factory):
    bag = write_bag(tmp_path / "bag", "mcap", n=10)
    receiver = receiver_factory(reliable=True)
    before = time.time_ns()
    done = run_player(str(bag), "--reliable", "--restamp", "--wait-for-subscribers", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    received = receiver.wait_for(10, timeout=10)
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in received]
    assert len(stamps) == 10 and before <= stamps[0] <= time.time_ns()
    assert [s - stamps[0] for s in stamps] == [stamp_ns(i) - stamp_ns(0) for i in range(10)]
    assert [bytes(m.data) for _, m in received] == [frame_pixels(i).tobytes() for i in range(10)]


def test_missing_bag_is_a_clear_error(tmp_path):
    done = run_player(str(tmp_path / "no_such_bag"))
    assert done.returncode == EXIT_MISSING
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("damage", ["garbage_mcap", "bad_metadata", "truncated_mcap", "unknown_suffix"])
def test_corrupt_bag_is_a_clear_error(tmp_path, damage):
    if damage == "garbage_mcap":
        bag = tmp_path / "garbage.mcap"
        bag.write_bytes(os.urandom(4096))
    elif damage == "bad_metadata":
        bag = write_bag(tmp_path / "bag", "mcap")
        (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [this is not: a bag")
    elif damage == "truncated_mcap":
        bag = write_bag(tmp_path / "bag", "mcap")
        data = (bag / "bag.mcap").read_bytes()
        (bag / "bag.mcap").write_bytes(data[: len(data) // 2])
    else:
        bag = tmp_path / "frames.bag"
        bag.write_bytes(b"#ROSBAG V2.0\n")
    done = run_player(str(bag))
    assert done.returncode == EXIT_UNREADABLE, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "cannot read bag" in done.stderr or "unreadable" in done.stderr

"""Foundation: real DDS between two processes with loopback-only discovery, and a core that works
where rclpy cannot be imported."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Raw 720p frames need the large shared-memory segment (Fast DDS's default 512 KiB one sends them
# as fragmented UDP, mostly lost); the profile's UDP transport is loopback-only as well.
LARGE_FRAMES = Path(__file__).resolve().parent.parent / "config" / "fastdds_large_frames.xml"

PUBLISHER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node("test_camera")
    pub = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    frame = np.zeros((720, 1280, 3), np.uint8)
    deadline = time.monotonic() + 180
    i = 0
    while time.monotonic() < deadline and sys.stdin.readable():
        frame[0, 0, 0] = i % 256
        msg = Image(height=720, width=1280, encoding="rgb8", step=1280 * 3, data=frame.tobytes())
        msg.header.frame_id = f"cam:{i}"
        pub.publish(msg)
        i += 1
        time.sleep(0.05)
    node.destroy_node()
    rclpy.shutdown()
""")

SUBSCRIBER = textwrap.dedent("""
    import time
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node("test_listener")
    got = []
    node.create_subscription(Image, "/camera/image_raw", got.append, qos_profile_sensor_data)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    deadline = time.monotonic() + 90
    while len(got) < 5 and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.1)
    for m in got[:5]:
        assert (m.width, m.height, m.encoding, len(m.data)) == (1280, 720, "rgb8", 1280 * 720 * 3), m
        assert m.data[0] == int(m.header.frame_id.split(":")[1]) % 256
    print("RECEIVED", len(got))
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown()
""")


def test_two_processes_exchange_720p_frames_over_loopback_dds():
    env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(LARGE_FRAMES))
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and env["ROS_DOMAIN_ID"]
    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER], env=env, stdin=subprocess.PIPE)
    try:
        sub = subprocess.run([sys.executable, "-c", SUBSCRIBER], env=env, capture_output=True, text=True,
                             timeout=150)
    finally:
        pub.kill()
        pub.wait()
    assert sub.returncode == 0, sub.stderr
    assert "error" not in sub.stderr.lower(), sub.stderr  # e.g. a profile Fast DDS refused
    assert int(sub.stdout.split("RECEIVED")[1]) >= 5


def test_other_domain_does_not_receive():
    """Isolation works both ways: a subscriber on another domain ID hears nothing."""
    env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(LARGE_FRAMES))
    other = dict(env, ROS_DOMAIN_ID=str((int(env["ROS_DOMAIN_ID"]) + 1) % 232))
    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER], env=env, stdin=subprocess.PIPE)
    try:
        script = SUBSCRIBER.replace("time.monotonic() + 90", "time.monotonic() + 4")
        sub = subprocess.run([sys.executable, "-c", script], env=other, capture_output=True, text=True, timeout=150)
    finally:
        pub.kill()
        pub.wait()
    assert sub.returncode == 0, sub.stderr
    assert int(sub.stdout.split("RECEIVED")[1]) == 0


NO_ROS = textwrap.dedent("""
    import builtins, sys
    real_import = builtins.__import__
    def guarded(name, *a, **k):
        if name == "rclpy" or name.startswith(("rclpy.", "ros_vilasr_interfaces", "sensor_msgs")):
            raise ImportError(f"No module named {name!r} (blocked by test)")
        return real_import(name, *a, **k)
    builtins.__import__ = guarded
    import ros_vilasr
    from ros_vilasr.core import chat, driver, encoding, images, processor, prompts, protocol, render
    from ros_vilasr.core import report, scoring, session
    from ros_vilasr.core.engines import create_engine
    from ros_vilasr.evaluation import benchmarks
    from PIL import Image
    s = session.Session([Image.new("RGB", (64, 64))], "q")
    engine = create_engine("replay", sys.argv[1])
    driver.run_sessions([s], engine)
    assert s.finish_reason == "answer", s.finish_reason
    assert not any(m == "rclpy" or m.startswith("rclpy.") for m in sys.modules)
    print("OK")
""")


def test_core_works_with_rclpy_unimportable(tmp_path):
    transcript = tmp_path / "t.json"
    transcript.write_text('{"conversations": [{"role": "assistant", "content": '
                          '"<think>x</think>\\nAction: Answer\\n<answer>A</answer>"}]}')
    out = subprocess.run([sys.executable, "-c", NO_ROS, str(transcript)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("OK")

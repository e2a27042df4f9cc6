"""Ingest benchmark over real DDS: what the node costs compared with a bare rclpy subscriber.

One publisher process sends 2 cameras x 30 Hz x 1280x720 rgb8 (rendered room frames, sensor-data
QoS) for ``--duration`` seconds into, side by side in the same run:
  (a) ``vilasr_node`` (replay engine, autostart, default key-frame settings, ``--budget-mb`` buffer);
  (b) a bare rclpy subscriber process with the same QoS that only counts frames.
Measured: frames received by each (the node's from its /diagnostics), CPU time of each process
during the publishing window (from /proc, so start-up imports are not counted), and the node's
RSS (baseline, peak) against its buffer memory budget.
Targets: node receives >= 99% of what the bare subscriber receives; node CPU <= 1.5x the bare
subscriber's; buffered bytes never above the budget, and the node's peak RSS growth beyond the
bare subscriber's (what the transport costs any subscriber, e.g. mapped shared memory) within it.

Runs once per Fast DDS transport set-up (``--transport``): ``default`` (the built-in UDPv4 + SHM
with a 512 KiB segment, where 720p frames fall back to fragmented UDP and most are lost on both
subscribers) and ``large-shm`` (config/fastdds_large_frames.xml: a 64 MiB SHM segment). The
targets are judged on ``large-shm``, where the transport does not decide the outcome.

    python benchmarks/ingest.py [--duration 20] [--budget-mb 64] [--transport default large-shm]

Writes benchmarks/results/ingest.json and ingest.md (``--out`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.machine import describe  # noqa: E402

TOPICS = ("/bench/cam_left/image_raw", "/bench/cam_right/image_raw")
WIDTH, HEIGHT, RATE_HZ = 1280, 720, 30.0
DISTINCT_FRAMES = 12  # rendered once per camera, cycled (the rig moves, so key frames change)
DRAIN_S = 1.0  # after the last publish, for frames in flight
DIAGNOSTICS_PERIOD_S = 1.0  # the node's default
PROFILE_XML = ROOT / "config" / "fastdds_large_frames.xml"
TRANSPORTS = {
    "default": {},
    "large-shm": {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE_XML)},
}
HEADLINE = "large-shm"
RESULTS = ROOT / "benchmarks" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- /proc readings -------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def memory_mib(pid: int) -> dict[str, float]:
    """Resident memory, MiB: current (VmRSS), lifetime peak (VmHWM), private anonymous (RssAnon)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"rss": out.get("VmRSS", 0.0), "peak": out.get("VmHWM", 0.0), "anon": out.get("RssAnon", 0.0)}


# -- roles (each runs in its own process) ---------------------------------------------------------------

def rendered_frames(camera: int) -> list[bytes]:
    """Rendered 720p views of the demo room from a moving camera, as raw rgb8 bytes."""
    from ros_vilasr.demo import layout
    from ros_vilasr.synth import scene as sc

    scene = layout.demo_scene()
    name = ("cam_left", "cam_right")[camera]
    frames = []
    for i in range(DISTINCT_FRAMES):
        base = layout.camera(name, i * layout.N_FRAMES // DISTINCT_FRAMES)
        cam = sc.Camera(base.position, base.yaw + 3.0 * i / DISTINCT_FRAMES, base.pitch, base.fov_deg, WIDTH, HEIGHT)
        frames.append(sc.render(scene, cam)[0].tobytes())
    return frames


def run_publisher(duration_s: float, expect_subscribers: int) -> int:
    """Publishes both cameras at RATE_HZ; prints READY, START <t>, END <t> <sent> on stdout."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.serialization import serialize_message
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from ros_vilasr.isolation import isolate

    isolate()
    # Serialise each distinct frame once; per publish only the stamp bytes change (CDR: 4-byte
    # encapsulation, then header.stamp sec int32, nanosec uint32).
    templates = []
    for cam, topic in enumerate(TOPICS):
        frame_id = topic.split("/")[2]
        templates.append([bytearray(serialize_message(Image(
            header=Header(frame_id=frame_id), height=HEIGHT, width=WIDTH, encoding="rgb8",
            is_bigendian=0, step=WIDTH * 3, data=data))) for data in rendered_frames(cam)])
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("ingest_publisher")
    pubs = [node.create_publisher(Image, t, qos_profile_sensor_data) for t in TOPICS]
    print("READY", flush=True)
    deadline = time.monotonic() + 120
    while any(p.get_subscription_count() < expect_subscribers for p in pubs):
        if time.monotonic() > deadline:
            print("ERROR subscribers did not appear", flush=True)
            return 1
        time.sleep(0.05)
    time.sleep(1.0)  # let both ends finish matching
    period, n = 1.0 / RATE_HZ, int(round(duration_s * RATE_HZ))
    start = time.monotonic()
    print(f"START {start:.6f}", flush=True)
    sent, late = 0, 0
    for i in range(n):
        due = start + i * period
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -period:
            late += 1
        stamp = time.time_ns()
        for cam, pub in enumerate(pubs):
            buf = templates[cam][i % DISTINCT_FRAMES]
            struct.pack_into("<iI", buf, 4, stamp // 1_000_000_000, stamp % 1_000_000_000)
            pub.publish(bytes(buf))
            sent += 1
    print(f"END {time.monotonic():.6f} {sent} {late}", flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def run_bare_subscriber() -> int:
    """Counts frames per topic with sensor-data QoS; prints JSON counts on SIGINT."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image

    from ros_vilasr.isolation import isolate

    isolate()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("ingest_bare_subscriber")
    counts = {t: 0 for t in TOPICS}

    def counter(topic):
        def on_frame(msg):
            counts[topic] += 1
        return on_frame

    for t in TOPICS:
        node.create_subscription(Image, t, counter(t), qos_profile_sensor_data)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    print("READY", flush=True)
    stop.wait()
    executor.shutdown()
    spinner.join(5)
    node.destroy_node()
    rclpy.shutdown()
    print(json.dumps(counts), flush=True)
    return 0


# -- orchestration --------------------------------------------------------------------------------------

class LineReader:
    """Reads a child's stdout lines on a thread so the orchestrator can wait for one."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for raw in stream:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._cond.notify_all()

    def wait_for(self, prefix: str, timeout_s: float) -> str:
        end = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                    if line.startswith("ERROR"):
                        raise RuntimeError(line)
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {prefix!r} line within {timeout_s} s (got {self.lines[-5:]})")
                self._cond.wait(left)


def run_once(duration_s: float, budget_mb: float, transport: str) -> dict:
    """One side-by-side run with the given Fast DDS transport set-up."""
    import subprocess

    from ros_vilasr.demo.client import QueryClient
    from ros_vilasr.demo.processes import ChildProcess, _die_with_parent
    from ros_vilasr.isolation import isolate

    env = dict(isolate())
    for key in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS"):
        env.pop(key, None)
    env.update(TRANSPORTS[transport])
    logs = Path(tempfile.mkdtemp(prefix="vilasr_ingest_"))
    me = [sys.executable, str(Path(__file__).resolve())]
    transcript = ROOT / "ros_vilasr" / "demo" / "data" / "replay_transcript.jsonl"
    node = ChildProcess("vilasr_node", [sys.executable, "-m", "ros_vilasr.node.main", "--ros-args",
                                        "-p", f"image_topics:=[{','.join(repr(t) for t in TOPICS)}]",
                                        "-p", "engine:=replay", "-p", f"replay_file:={transcript}",
                                        "-p", "autostart:=true", "-p", f"buffer_memory_mb:={float(budget_mb)}",
                                        ], env, logs / "node.log", cwd=str(ROOT))
    roles_log = open(logs / "roles.log", "ab")  # noqa: SIM115 - closed below
    spawn = dict(env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=roles_log,
                 start_new_session=True, preexec_fn=_die_with_parent)
    bare = subprocess.Popen([*me, "--role", "subscriber"], **spawn)
    publisher = None
    client = None
    peak_buffer = 0
    peak_anon = {"node": 0.0, "bare": 0.0}
    try:
        node.start()
        bare_out = LineReader(bare.stdout)
        bare_out.wait_for("READY", 60)
        # The observer (this process) must use the same transport set-up as the others.
        os.environ.update(TRANSPORTS[transport])
        client = QueryClient(client_name="ingest_observer")
        if not client.wait_for_server(180, alive=lambda: node.alive):
            raise RuntimeError(f"the node did not come up; log:\n{node.tail()}")
        publisher = subprocess.Popen([*me, "--role", "publisher", "--duration", str(duration_s)], **spawn)
        pub_out = LineReader(publisher.stdout)
        pub_out.wait_for("READY", 120)
        pub_out.wait_for("START", 120)
        cpu0 = {"node": cpu_seconds(node.pid), "bare": cpu_seconds(bare.pid)}
        mem0 = {"node": memory_mib(node.pid), "bare": memory_mib(bare.pid)}
        t0 = time.monotonic()
        while publisher.poll() is None and time.monotonic() - t0 < duration_s + 60:
            peak_buffer = max(peak_buffer, _buffer_bytes(client))
            for name, pid in (("node", node.pid), ("bare", bare.pid)):
                peak_anon[name] = max(peak_anon[name], memory_mib(pid)["anon"])
            time.sleep(0.1)
        end = pub_out.wait_for("END", 10).split()
        time.sleep(DRAIN_S)
        cpu1 = {"node": cpu_seconds(node.pid), "bare": cpu_seconds(bare.pid)}
        mem1 = {"node": memory_mib(node.pid), "bare": memory_mib(bare.pid)}
        time.sleep(2.5 * DIAGNOSTICS_PERIOD_S)  # final counts
        peak_buffer = max(peak_buffer, _buffer_bytes(client))
        node_counts = client.frame_counts()
        bare.send_signal(signal.SIGINT)
        bare_counts = json.loads(bare_out.wait_for("{", 15))
    finally:
        for key in TRANSPORTS[transport]:
            os.environ.pop(key, None)
        if client is not None:
            client.close()
        node.stop()
        for proc in (bare, publisher):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        roles_log.close()
    sent = int(end[2])
    node_total = sum(node_counts.get(t, 0) for t in TOPICS)
    bare_total = sum(bare_counts.values())
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    growth = {k: mem1[k]["peak"] - mem0[k]["rss"] for k in mem0}
    excess = growth["node"] - growth["bare"]
    result = {
        "transport": transport, "published": sent, "publisher_late_ticks": int(end[3]),
        "received": {"node": node_total, "bare": bare_total,
                     "node_per_camera": {t: node_counts.get(t, 0) for t in TOPICS}, "bare_per_camera": bare_counts},
        "received_pct_of_published": {"node": round(100 * node_total / sent, 1),
                                      "bare": round(100 * bare_total / sent, 1)},
        "node_vs_bare_received": node_total / bare_total if bare_total else 0.0,
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_percent_of_one_core": {k: round(100 * v / duration_s, 1) for k, v in cpu.items()},
        "node_cpu_vs_bare": cpu["node"] / cpu["bare"] if cpu["bare"] else float("inf"),
        "memory_mib": {
            "node_baseline_rss": round(mem0["node"]["rss"], 1), "node_peak_rss": round(mem1["node"]["peak"], 1),
            "node_peak_growth": round(growth["node"], 1),
            "node_peak_anon_growth": round(peak_anon["node"] - mem0["node"]["anon"], 1),
            "bare_baseline_rss": round(mem0["bare"]["rss"], 1), "bare_peak_rss": round(mem1["bare"]["peak"], 1),
            "bare_peak_growth": round(growth["bare"], 1), "node_growth_beyond_bare": round(excess, 1),
            "node_peak_buffered": round(peak_buffer / 2**20, 1), "budget": budget_mb},
    }
    result["targets"] = {
        "received_ge_99pct_of_bare": result["node_vs_bare_received"] >= 0.99,
        "cpu_le_1p5x_bare": result["node_cpu_vs_bare"] <= 1.5,
        "buffer_within_budget": peak_buffer <= int(budget_mb * 2**20),
        "rss_growth_beyond_bare_within_budget": excess <= budget_mb,
    }
    return result


def run_benchmark(duration_s: float, budget_mb: float, transports: list[str], out_dir: Path) -> dict:
    runs = {}
    for transport in transports:
        print(f"[ingest] {transport}: {duration_s:.0f} s of 2 x 30 Hz 720p ...", file=sys.stderr, flush=True)
        runs[transport] = run_once(duration_s, budget_mb, transport)
    result = {
        "config": {"cameras": len(TOPICS), "rate_hz": RATE_HZ, "width": WIDTH, "height": HEIGHT,
                   "encoding": "rgb8", "duration_s": duration_s, "qos": "sensor data (best effort, depth 5)",
                   "node_buffer_memory_mb": budget_mb, "node_engine": "replay",
                   "headline_transport": HEADLINE if HEADLINE in runs else transports[-1]},
        "machine": describe(),
        "runs": runs,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ingest.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "ingest.md").write_text(markdown(result))
    return result


def _buffer_bytes(client) -> int:
    msg = client.diagnostics
    for status in (msg.status if msg else []):
        if status.name.endswith("frame buffer"):
            return int({kv.key: kv.value for kv in status.values}.get("bytes", 0))
    return 0


TRANSPORT_NOTES = {
    "default": "Fast DDS built-in transports (UDPv4 + SHM, 512 KiB segment)",
    "large-shm": "config/fastdds_large_frames.xml (64 MiB SHM segment)",
}


def markdown(result: dict) -> str:
    from benchmarks.machine import markdown as machine_md

    m, c = result["machine"], result["config"]

    def met(ok):
        return "met" if ok else "NOT met"

    lines = [
        "# Ingest over real DDS: vilasr_node vs a bare rclpy subscriber",
        "",
        machine_md(m) + f" RMW {m['rmw']}.",
        "",
        f"{c['cameras']} cameras × {c['rate_hz']:.0f} Hz × {c['width']}×{c['height']} {c['encoding']} for "
        f"{c['duration_s']:.0f} s from a separate publisher process, {c['qos']}; the node (replay engine, "
        f"buffer budget {c['node_buffer_memory_mb']:.0f} MiB, default key-frame settings) and a bare rclpy "
        "subscriber (counts frames, same QoS) receive side by side in the same run. CPU is measured over the "
        "publishing window only (start-up excluded). Command: `python benchmarks/ingest.py`.",
        "",
        "| transport | process | published | received | % | CPU s | % of one core | RSS before → peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["runs"].items():
        mem = r["memory_mib"]
        for who, label in (("node", "vilasr_node"), ("bare", "bare subscriber")):
            lines.append(
                f"| {name} | {label} | {r['published']} | {r['received'][who]} | "
                f"{r['received_pct_of_published'][who]} | {r['cpu_s'][who]} | {r['cpu_percent_of_one_core'][who]} | "
                f"{mem[who + '_baseline_rss']} → {mem[who + '_peak_rss']} |")
    lines.append("")
    for name, r in result["runs"].items():
        mem, t = r["memory_mib"], r["targets"]
        lines += [
            f"**{name}** ({TRANSPORT_NOTES.get(name, name)}): node received "
            f"{100 * r['node_vs_bare_received']:.1f}% of the bare subscriber's frames, CPU "
            f"{r['node_cpu_vs_bare']:.2f}× the bare subscriber's; peak buffered frames "
            f"{mem['node_peak_buffered']} MiB of the {mem['budget']:.0f} MiB budget; peak RSS growth "
            f"{mem['node_peak_growth']} MiB (bare subscriber {mem['bare_peak_growth']} MiB, mostly mapped "
            f"shared memory of the transport; private memory of the node +{mem['node_peak_anon_growth']} MiB), "
            f"i.e. {mem['node_growth_beyond_bare']} MiB beyond the bare subscriber.",
            f"Targets: ≥ 99% of bare: {met(t['received_ge_99pct_of_bare'])}; CPU ≤ 1.5×: "
            f"{met(t['cpu_le_1p5x_bare'])}; buffer within budget: {met(t['buffer_within_budget'])}; RSS growth "
            f"beyond bare within budget: {met(t['rss_growth_beyond_bare_within_budget'])}.",
            "",
        ]
    head = c["headline_transport"]
    lines.append(f"Targets are judged on **{head}**. With the default transports both subscribers lose most "
                 "720p frames in the transport (fragmented UDP), which says nothing about the node: deploy "
                 "camera pipelines with a large shared-memory segment (the profile above) or compressed topics.")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=20.0, help="seconds of publishing (default 20)")
    p.add_argument("--budget-mb", type=float, default=64.0,
                   help="node buffer_memory_mb (default 64: below what 16 key frames x 2 cameras of "
                        "720p need, so the budget is exercised)")
    p.add_argument("--transport", nargs="+", choices=tuple(TRANSPORTS), default=list(TRANSPORTS),
                   help="Fast DDS set-ups to run, one after the other (default: all)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--role", choices=("publisher", "subscriber"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "publisher":
        return run_publisher(args.duration, expect_subscribers=2)
    if args.role == "subscriber":
        return run_bare_subscriber()
    result = run_benchmark(args.duration, args.budget_mb, args.transport, args.out)
    print(markdown(result))
    return 0 if all(result["runs"][result["config"]["headline_transport"]]["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Reliability benchmark: bursts, lifecycle cycles, cancel and deactivate against a hung model
server, and fuzzing of model turns and camera frames — over real DDS where ROS is involved.

1. Burst: N goals sent at once to ``vilasr_node`` (openai engine, a local stand-in server that
   answers at once, max_pending 4) — answered / refused with a reason / lost — side by side with a
   bare rclpy action server left at the default request depth (10), which accepts and succeeds
   every goal: the baseline a node without deep queues gets.
2. Hung server: cancel latency and deactivate latency while the model server holds the request
   (it would answer after 120 s).
3. Lifecycle: 50 deactivate / activate cycles of a node serving the embedded model (transformers
   engine), its RSS at cycles 1, 10, 25, 50 and the deactivate latency; cancel latency of a
   running embedded-model query.
4. Fuzz, in-process: >= 10,000 malformed model turns into a session and >= 1,000 malformed camera
   frames into the node's frame decoding; an exception other than the documented refusal escaping
   counts as a failure.

    python benchmarks/reliability.py [--goals 100] [--cycles 50]

Writes benchmarks/results/reliability.{json,md} with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.machine import describe  # noqa: E402
from benchmarks.machine import markdown as machine_markdown  # noqa: E402
from ros_vilasr.isolation import isolate  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CAMERA = "/bench/cam/image_raw"
ANSWER = "<think>Seen.</think>\nAction: Answer\n<answer>A</answer>"
TIMEOUT_S = 60.0


# -- a stand-in model server -----------------------------------------------------------------------

class ModelServer(ThreadingHTTPServer):
    """OpenAI-compatible stand-in: answers at once, or holds requests while ``hold`` is set."""

    daemon_threads = True

    def __init__(self):
        self.hold = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                if server.hold.is_set():
                    time.sleep(120.0)
                body = json.dumps({"choices": [{"message": {"content": ANSWER}, "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except ConnectionError:
                    pass  # the node hung up (cancel, deactivate): what is being measured

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/v1"


# -- the node and its client -----------------------------------------------------------------------

class Node:
    """vilasr_node in its own process and a client in this one."""

    def __init__(self, name: str, log: Path, **parameters):
        import rclpy
        from lifecycle_msgs.srv import ChangeState, GetState
        from rclpy.action import ActionClient
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from ros_vilasr_interfaces.action import SpatialQuery

        args = [sys.executable, "-m", "ros_vilasr.node.main", "--ros-args", "-r", f"__node:={name}"]
        for key, value in {"image_topics": f"['{CAMERA}']", "keyframe_min_interval_s": 0.0, **parameters}.items():
            args += ["-p", f"{key}:={value}"]
        self._log = open(log, "w")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=os.environ | {"PYTHONPATH": str(ROOT)})
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"{name}_bench_client", context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()
        deep = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.action = ActionClient(self.node, SpatialQuery, f"/{name}/query", goal_service_qos_profile=deep,
                                   result_service_qos_profile=deep)
        self.change = self.node.create_client(ChangeState, f"/{name}/change_state")
        self.get_state = self.node.create_client(GetState, f"/{name}/get_state")
        self.frames = self.node.create_publisher(Image, CAMERA, 10)
        self.Goal, self.Image = SpatialQuery.Goal, Image
        wait(lambda: self.state() == "active", 120.0)

    def call(self, client, request, timeout: float = TIMEOUT_S):
        assert client.wait_for_service(timeout_sec=timeout)
        future = client.call_async(request)
        return wait(future.done, timeout) and future.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState
        return self.call(self.get_state, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> float:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState
        start = time.perf_counter()
        assert self.call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success
        return time.perf_counter() - start

    def publish_frame(self, seed: int) -> None:
        import numpy as np
        pixels = np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)
        msg = self.Image(height=240, width=320, encoding="rgb8", step=960)
        msg.header.frame_id, msg.header.stamp.sec = "bench", seed
        msg.data = pixels.tobytes()
        wait(lambda: self.frames.get_subscription_count() > 0, TIMEOUT_S)
        self.frames.publish(msg)
        time.sleep(0.3)

    def send(self, question: str):
        future = self.action.send_goal_async(self.Goal(question=question, cameras=[CAMERA]))
        return wait(future.done, TIMEOUT_S) and future.result()

    def result(self, handle, timeout: float = TIMEOUT_S):
        future = handle.get_result_async()
        return future.result() if wait(future.done, timeout) else None

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    def close(self) -> None:
        import rclpy
        self.proc.send_signal(2)
        try:
            self.proc.wait(30.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._log.close()


def wait(condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return False


# -- 1. burst --------------------------------------------------------------------------------------

def burst(node: Node, n: int) -> dict:
    from action_msgs.msg import GoalStatus

    futures = [node.action.send_goal_async(node.Goal(question=f"burst {i}", cameras=[CAMERA])) for i in range(n)]
    wait(lambda: all(f.done() for f in futures), TIMEOUT_S)
    handles = [f.result() for f in futures if f.done()]
    results = [node.result(h) for h in handles if h.accepted]
    answered = sum(r is not None and r.status == GoalStatus.STATUS_SUCCEEDED for r in results)
    refused = [r.result.answer.error for r in results if r is not None and r.result.answer.finish_reason == "rejected"]
    return {"goals": n, "answered": answered, "refused_with_reason": sum(bool(e) for e in refused),
            "refused_without_reason": sum(1 for h in handles if not h.accepted),
            "lost": n - answered - len(refused) - sum(1 for h in handles if not h.accepted),
            "reason_example": refused[0] if refused else ""}


def bare_server_burst(n: int) -> dict:
    """The baseline: a bare action server at rclpy's default request depth, every goal accepted."""
    import rclpy
    from rclpy.action import ActionClient, ActionServer
    from rclpy.executors import MultiThreadedExecutor

    from ros_vilasr_interfaces.action import SpatialQuery

    context = rclpy.Context()
    rclpy.init(context=context)
    server_node = rclpy.create_node("bare_query_server", context=context)
    client_node = rclpy.create_node("bare_query_client", context=context)

    def execute(goal_handle):
        goal_handle.succeed()
        return SpatialQuery.Result()

    server = ActionServer(server_node, SpatialQuery, "/bare/query", execute)
    client = ActionClient(client_node, SpatialQuery, "/bare/query")
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(server_node)
    executor.add_node(client_node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        assert client.wait_for_server(timeout_sec=TIMEOUT_S)
        futures = [client.send_goal_async(SpatialQuery.Goal(question=f"bare {i}")) for i in range(n)]
        wait(lambda: all(f.done() for f in futures), 20.0)
        responded = sum(f.done() for f in futures)
        return {"goals": n, "goal_responses": responded, "lost": n - responded}
    finally:
        executor.shutdown()
        server.destroy()
        client.destroy()
        server_node.destroy_node()
        client_node.destroy_node()
        rclpy.try_shutdown(context=context)


# -- 2. a hung server --------------------------------------------------------------------------------

def hung_server(node: Node, model: ModelServer, trials: int) -> dict:
    from lifecycle_msgs.msg import Transition

    cancel_s, deactivate_s, ended = [], [], []
    model.hold.set()
    try:
        for i in range(trials):
            node.publish_frame(1000 + i)
            handle = node.send(f"hung cancel {i}")
            time.sleep(0.5)  # the request is at the server
            start = time.perf_counter()
            handle.cancel_goal_async()
            if node.result(handle, 130.0) is not None:
                cancel_s.append(time.perf_counter() - start)
            handle = node.send(f"hung deactivate {i}")
            time.sleep(0.5)
            deactivate_s.append(node.transition(Transition.TRANSITION_DEACTIVATE))
            result = node.result(handle, 10.0)
            ended.append(result is not None)
            node.transition(Transition.TRANSITION_ACTIVATE)
    finally:
        model.hold.clear()
    return {"trials": trials, "server_hangs_s": 120.0, "cancel_s": summary(cancel_s),
            "deactivate_s": summary(deactivate_s), "goals_ended_at_deactivate": sum(ended)}


# -- 3. lifecycle cycles and embedded-model cancel -------------------------------------------------------

def lifecycle(node: Node, cycles: int) -> dict:
    from lifecycle_msgs.msg import Transition

    rss, deactivate_s = {}, []
    for cycle in range(1, cycles + 1):
        deactivate_s.append(node.transition(Transition.TRANSITION_DEACTIVATE))
        node.transition(Transition.TRANSITION_ACTIVATE)
        if cycle in (1, 10, 25, 50) or cycle == cycles:
            rss[cycle] = round(node.rss_mib(), 1)
    return {"cycles": cycles, "rss_mib": rss, "deactivate_s": summary(deactivate_s)}


def model_cancel(node: Node, trials: int) -> dict:
    latencies = []
    for i in range(trials):
        node.publish_frame(2000 + i)
        handle = node.send("How many objects are on the floor?")
        time.sleep(1.0)  # mid-generation
        start = time.perf_counter()
        handle.cancel_goal_async()
        if node.result(handle) is not None:
            latencies.append(time.perf_counter() - start)
    return {"trials": trials, "cancel_s": summary(latencies)}


# -- 4. fuzz ---------------------------------------------------------------------------------------

VALID_TURNS = [
    '<think>Mark it.</think>\nAction: Object Mapper\n```json\n[{"index": 1, "bbox_2d": [10, 20, 100, 120], '
    '"label": "cup"}]\n```',
    '<think>Trace it.</think>\nAction: Path Tracer\n```json\n[{"index": 1, "start_point_2d": [5, 5], '
    '"end_point_2d": [200, 90], "label": "route"}]\n```',
    "<think>Done.</think>\nAction: Answer\n<answer>B</answer>",
]
NASTY = ["", "\x00", "NaN", "Infinity", "-1", "1e309", "null", "[]", "{}", '"', "```", "<think>", "</answer>",
         "Action:", "椅子", "\ud800", "9" * 400, '{"index": 99}', '"bbox_2d": [1, 2]', "\n" * 50]


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(text))
        kind = rng.randrange(4)
        if kind == 0:
            text = text[:at]
        elif kind == 1:
            text = text[:at] + rng.choice(NASTY) + text[at:]
        elif kind == 2:
            text = text[:at] + text[at + rng.randint(1, 20):]
        else:
            text = text[:at] + "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(1, 8))) + text[at:]
    return text


def fuzz_turns(n: int, seed: int = 0) -> dict:
    """``n`` malformed turns, submitted to sessions of up to 10 turns each."""
    from PIL import Image

    from ros_vilasr.core.session import Budget, Reply, Session

    rng, image = random.Random(seed), Image.new("RGB", (224, 224), "white")
    escaped, reasons, turns = [], {}, 0
    while turns < n:
        session = Session([image], "Where is the cup?", budget=Budget(max_calls=10), max_pixels=224 * 224)
        try:
            while not session.done and turns < n:
                turns += 1
                session.submit(Reply(mutate(rng, rng.choice(VALID_TURNS)), rng.choice(["stop", "length"])))
            reasons[session.finish_reason] = reasons.get(session.finish_reason, 0) + 1
        except Exception as exc:  # noqa: BLE001 - what is being counted
            escaped.append(f"turn {turns}: {type(exc).__name__}: {exc}")
    return {"turns": turns, "escaped_exceptions": len(escaped), "examples": escaped[:5], "sessions_ended": reasons}


def fuzz_frames(n: int, seed: int = 0) -> dict:
    import io
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from ros_vilasr.node.conversions import FrameError, compressed_payload, raw_payload

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    escaped, kinds = [], {}
    for i in range(n):
        if i % 2:
            data = bytearray(png)
            for _ in range(int(rng.integers(1, 6))):
                at = int(rng.integers(0, len(data)))
                junk = rng.integers(0, 256, int(rng.integers(0, 8)), np.uint8).tobytes()
                data[at:at + int(rng.integers(1, 8))] = junk
            convert = compressed_payload
            msg = SimpleNamespace(data=bytes(data[: int(rng.integers(0, len(data) + 1))]))
        else:
            width, height = (int(v) for v in rng.choice([0, 1, 27, 28, 80, 2000, 70000], 2))
            encoding = str(rng.choice(["rgb8", "bgr8", "mono8", "rgba8", "16UC1", "", "yuv422"]))
            step = int(rng.choice([0, width, width * 3, width * 4, 2**31 - 1]))
            size = int(rng.choice([0, step * height, step * height - 1, 100]))
            size = min(max(size, 0), 2**22)
            convert, msg = raw_payload, SimpleNamespace(width=width, height=height, encoding=encoding, step=step,
                                                        data=bytes(size))
        try:
            convert(msg, 4096 * 4096)
            kinds["accepted"] = kinds.get("accepted", 0) + 1
        except FrameError as exc:
            kinds[exc.kind] = kinds.get(exc.kind, 0) + 1
        except Exception as exc:  # noqa: BLE001 - what is being counted
            escaped.append(f"frame {i}: {type(exc).__name__}: {exc}")
    return {"frames": n, "escaped_exceptions": len(escaped), "examples": escaped[:5], "outcomes": kinds}


# -- report ----------------------------------------------------------------------------------------

def summary(values: list[float]) -> dict:
    return {"n": len(values), "median": round(statistics.median(values), 3) if values else None,
            "max": round(max(values), 3) if values else None}


def report_markdown(r: dict) -> str:
    b, base, h, life, cancel = r["burst"], r["bare_burst"], r["hung_server"], r["lifecycle"], r["model_cancel"]
    lines = ["# Reliability", "", machine_markdown(r["machine"]), "",
             f"## Burst of {b['goals']} goals at once", "",
             "| server | answered | refused with a reason | refused without a reason | lost |", "|---|---|---|---|---|",
             f"| vilasr_node (request queues 1000 deep, max_pending 4) | {b['answered']} | {b['refused_with_reason']} "
             f"| {b['refused_without_reason']} | **{b['lost']}** |",
             f"| bare rclpy action server, default depth 10 (baseline) | {base['goal_responses']} accepted | – | – "
             f"| **{base['lost']}** |", "", f"Reason given: `{b['reason_example']}`", "",
             f"## A model server that hangs ({h['server_hangs_s']:.0f} s per request), {h['trials']} trials", "",
             "| what | median | max |", "|---|---|---|",
             f"| cancel → CANCELED | {h['cancel_s']['median']} s | {h['cancel_s']['max']} s |",
             f"| deactivate with the request in flight | {h['deactivate_s']['median']} s "
             f"| {h['deactivate_s']['max']} s |", "",
             f"Goals ended (with their result) by the deactivation: {h['goals_ended_at_deactivate']} of {h['trials']}.",
             "", f"## {life['cycles']} deactivate / activate cycles, embedded model (transformers engine)", "",
             "| cycle | " + " | ".join(map(str, life["rss_mib"])) + " |", "|---" * (len(life["rss_mib"]) + 1) + "|",
             "| RSS (MiB) | " + " | ".join(str(v) for v in life["rss_mib"].values()) + " |", "",
             f"Deactivate: median {life['deactivate_s']['median']} s, max {life['deactivate_s']['max']} s. "
             f"Cancel of a running embedded-model query: median {cancel['cancel_s']['median']} s, "
             f"max {cancel['cancel_s']['max']} s ({cancel['trials']} trials).", "", "## Fuzz", "",
             f"- {r['fuzz_turns']['turns']} malformed model turns: **{r['fuzz_turns']['escaped_exceptions']}** "
             f"escaped exceptions; sessions ended {r['fuzz_turns']['sessions_ended']}",
             f"- {r['fuzz_frames']['frames']} malformed frames: **{r['fuzz_frames']['escaped_exceptions']}** "
             f"escaped exceptions; outcomes {r['fuzz_frames']['outcomes']}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--goals", type=int, default=100)
    p.add_argument("--cycles", type=int, default=50)
    p.add_argument("--trials", type=int, default=5, help="hung-server and cancel trials")
    p.add_argument("--turns", type=int, default=10_000)
    p.add_argument("--frames", type=int, default=1_000)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    isolate()
    logs = Path(tempfile.mkdtemp(prefix="vilasr_reliability_"))
    r = {"machine": describe(), "fuzz_turns": fuzz_turns(args.turns), "fuzz_frames": fuzz_frames(args.frames)}
    model = ModelServer()
    node = Node("vilasr_burst", logs / "openai_node.log", engine="openai", model="served",
                openai_base_url=model.url, max_pending=4)
    try:
        node.publish_frame(1)
        r["burst"] = burst(node, args.goals)
        r["hung_server"] = hung_server(node, model, args.trials)
    finally:
        node.close()
    r["bare_burst"] = bare_server_burst(args.goals)
    node = Node("vilasr_cycles", logs / "embedded_node.log", device="cpu")
    try:
        r["lifecycle"] = lifecycle(node, args.cycles)
        r["model_cancel"] = model_cancel(node, args.trials)
    finally:
        node.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reliability.json").write_text(json.dumps(r, indent=1) + "\n")
    (args.out / "reliability.md").write_text(report_markdown(r))
    print(report_markdown(r))
    return 0 if r["burst"]["lost"] == 0 and not r["fuzz_turns"]["escaped_exceptions"] \
        and not r["fuzz_frames"]["escaped_exceptions"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

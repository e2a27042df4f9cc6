"""The README's main job: ``python -m ros_vilasr.demo.run [--model M] [--engine E] [--out DIR]``.

Plays the bundled two-camera recording (colour, depth and camera_info, looping) into
``vilasr_node``, asks the demo questions through the ``~/query`` action, prints every reasoning
step as it arrives — each drawing with its 3-D lift from the depth — and each answer next to the
ground truth, saves the drawn images, then registers a standing question (``~/watch``) about the
robot that crosses the room and prints its events beside the recording's truth at that frame, and
shuts everything down (also on Ctrl-C).

It runs the model the user names — by default ``embedded``, the small draw-to-reason model shipped
in the package, live on the CPU. Weights that cannot be loaded here (missing or corrupt files, a
hub id not in the Hugging Face cache — nothing is downloaded — or a 7B model without a GPU) end the
demo with one line saying why. ``--engine replay`` plays back the bundled recorded trace instead,
labelled as a replay throughout; nothing falls back to it silently.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ros_vilasr.core.models import EMBEDDED, ModelFilesError, resolve_model
from ros_vilasr.isolation import isolate

from . import layout
from .processes import ChildProcess, python_module_argv
from .record import BAG_NAME, SCENE_FILE, TRANSCRIPT_FILE

log = logging.getLogger("ros_vilasr.demo")

DATA = Path(__file__).resolve().parent / "data"
BIG_MODEL_BYTES = 2 * 2**30  # weights this large need a GPU to answer in reasonable time
ENGINES = ("transformers", "vllm", "openai", "replay")


# -- which engine ------------------------------------------------------------------------------------

@dataclass
class EngineChoice:
    engine: str
    model: str
    replay_file: str = ""
    offline: bool = False  # weights come from the Hugging Face cache: never touch the network

    @property
    def is_replay(self) -> bool:
        return self.engine == "replay"


class CannotRun(Exception):
    """The model the user asked for cannot run here; the message says why and what to do."""


def find_weights(model: str) -> Path | None:
    """The local directory of ``model`` (a path, or a hub id already in the Hugging Face cache)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path if (path / "config.json").is_file() else None
    if model.count("/") != 1 or path.exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:  # noqa: BLE001 - a broken cache means "not available", never a crash
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def weights_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir()
               if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file())


def gpu_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def choose_engine(engine: str, model: str, transcript: Path) -> EngineChoice:
    """What the node will run, or ``CannotRun`` with the reason."""
    if engine == "replay":
        return EngineChoice("replay", "", str(transcript))
    if engine == "openai":
        return EngineChoice(engine, model)  # a server the user runs: the node reports if it fails
    try:
        resolved = resolve_model(model)
    except ModelFilesError as exc:
        raise CannotRun(str(exc)) from None
    weights = find_weights(resolved)
    if weights is None:
        raise CannotRun(f"{model!r} is not on disk or in the Hugging Face cache (nothing is downloaded here); "
                        f"run the shipped model with --model {EMBEDDED}, or --engine replay")
    needs_gpu = engine == "vllm" or weights_bytes(weights) > BIG_MODEL_BYTES
    if needs_gpu and not gpu_available():
        raise CannotRun(f"no GPU for {model!r} with the {engine} engine; run the shipped model with "
                        f"--model {EMBEDDED}, or --engine replay")
    local = Path(resolved).is_dir()
    return EngineChoice(engine, model if model == EMBEDDED or not local else resolved, offline=not local)


# -- printing -------------------------------------------------------------------------------------------

def say(text: str = "") -> None:
    print(text, flush=True)


def printable(text: str, limit: int | None = None) -> str:
    """Model text made safe for a terminal (an untrained model emits control bytes), optionally cut."""
    text = "".join(c if c.isprintable() or c == "\n" else "\ufffd" for c in text)
    return text if limit is None or len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


def _coords(values) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in values) + "]"


def describe_step(step, camera_of: dict[int, str], replay: bool) -> list[str]:
    tag = "[replay] " if replay else ""
    head = f"  {tag}step {step.step} · {step.action or 'unparsed'}"
    if step.revises_earlier:
        head += " · reflection: redraws an earlier drawing"
    lines = [head]
    if step.thought:
        lines.append(f"      {printable(step.thought, 2000)}")
    for op in step.ops:
        what = "box" if op.kind == 0 else "line"
        cam = camera_of.get(op.source_image_index, op.header.frame_id)
        lines.append(f"      {what} {printable(op.label, 80)!r} on image {op.image_index}: "
                     f"{_coords(op.model_coords)} in the model grid = {_coords(op.source_coords)} px in {cam}")
        lines.append(f"        {lift_text(op)}")
    if step.error:
        lines.append(f"      error: {step.error}")
    return lines


def lift_text(op) -> str:
    """A drawing in 3-D, in the frame it was lifted to (a camera's optical frame: x right, y down,
    z forward; metres)."""
    if not op.lifted:
        return f"3-D: not lifted ({op.lift_error or 'no depth'})"
    if op.kind == 0:
        p, e = op.position, op.extent
        return (f"3-D: at ({p.x:.2f}, {p.y:.2f}, {p.z:.2f}) m in {op.frame_id}, "
                f"{e.x:.2f} × {e.y:.2f} m across")
    return f"3-D: {op.length_m:.2f} m long in {op.frame_id}"


def save_image(msg, path: Path) -> None:
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1}.get(msg.encoding, 3)
    pixels = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :msg.width * channels]
    pixels = pixels.reshape(msg.height, msg.width, channels)
    if msg.encoding == "bgr8":
        pixels = pixels[:, :, ::-1]
    Image.fromarray(pixels.squeeze()).save(path)


def is_correct(answer: str, truth: str, problem_type: str) -> bool:
    from ros_vilasr.core.scoring import score_answer

    return score_answer(answer, truth, problem_type) >= 1.0


# -- the run --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ros_vilasr.demo.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=EMBEDDED,
                   help=f"{EMBEDDED} (the shipped model, default), a local checkpoint or a cached hub id")
    p.add_argument("--engine", default="transformers", choices=ENGINES, help="inference back end")
    p.add_argument("--out", type=Path, default=Path("demo_output"),
                   help="where drawn images, answers and logs go (default ./demo_output)")
    p.add_argument("--transcript", type=Path, default=DATA / TRANSCRIPT_FILE,
                   help="recorded trace for the replay engine (default: the bundled one)")
    p.add_argument("--watch-s", type=float, default=10.0,
                   help="how long to follow the standing question about the robot (0: skip it)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds to wait for the node (model loading) and for each answer")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="[%(name)s] %(levelname)s: %(message)s")
    env = dict(isolate())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    try:
        choice = choose_engine(args.engine, args.model, args.transcript)
    except CannotRun as exc:
        say(f"error: {exc}")
        return 2
    if choice.offline:
        env["HF_HUB_OFFLINE"] = "1"
    scene = json.loads((DATA / SCENE_FILE).read_text())
    topics = list(layout.TOPICS.values())
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("q*_image*.png"):
        old.unlink()

    player = ChildProcess("bag player", python_module_argv(
        "ros_vilasr.node.bag_player", str(DATA / BAG_NAME), "--loop"), env, args.out / "bag_player.log")
    node_args = ["--ros-args", "-p", f"image_topics:={ros_list(topics)}",
                 "-p", f"depth_topics:={ros_list(layout.DEPTH_TOPICS.values())}",
                 "-p", f"camera_info_topics:={ros_list(layout.INFO_TOPICS.values())}",
                 "-p", f"engine:={choice.engine}", "-p", "autostart:=true"]
    node_args += ["-p", f"replay_file:={choice.replay_file}"] if choice.is_replay else ["-p", f"model:={choice.model}"]
    node = ChildProcess("vilasr_node", python_module_argv("ros_vilasr.node.main", *node_args), env,
                        args.out / "vilasr_node.log")
    client = None
    try:
        label = ("replay engine: REPLAY of a recorded trace, no model runs" if choice.is_replay
                 else f"{choice.engine} engine, model {choice.model}")
        say(f"ros_vilasr demo · {label} · ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']}")
        say(f"playing {DATA / BAG_NAME} ({', '.join(topics)}; {layout.FRAME_RATE_HZ} Hz, looping) into vilasr_node")
        player.start()
        node.start()
        from .client import QueryClient

        client = QueryClient()
        alive = lambda: node.alive and player.alive  # noqa: E731
        if not client.wait_for_server(args.timeout, stop, alive):
            return _fail(stop, "vilasr_node did not offer its query action", node, player)
        if not client.wait_for_frames(topics, 60.0, stop, alive):
            return _fail(stop, "vilasr_node received no camera frames", node, player)
        say(f"node ready; frames arriving ({', '.join(f'{t}: {n}' for t, n in client.frame_counts().items())})")
        results = [_ask(client, i, q, choice, args, stop) for i, q in enumerate(scene["questions"], 1)]
        watch = _follow_watch(client, scene["watch"], choice, args, stop) if args.watch_s > 0 else None
        if stop.is_set():
            say("interrupted")
            return 130
        return _summary(results, watch, choice, args.out)
    finally:
        if client is not None:
            client.close()
        node.stop()
        player.stop()


def ros_list(values) -> str:
    """A string list as a ``-p name:=[...]`` parameter value."""
    return f"[{','.join(repr(v) for v in values)}]"


def _fail(stop: threading.Event, what: str, *children: ChildProcess) -> int:
    if stop.is_set():
        say("interrupted")
        return 130
    say(f"error: {what}")
    for child in children:
        if not child.alive:
            say(f"--- {child.name} exited with {child.returncode}; last lines of {child.log_path}:")
            say(child.tail())
    return 1


def _ask(client, number: int, q: dict, choice: EngineChoice, args, stop) -> dict:
    from ros_vilasr_interfaces.action import SpatialQuery

    cameras = [layout.TOPICS[c] for c in q["cameras"]]
    camera_of = {i + 1: c for i, c in enumerate(q["cameras"])}
    say()
    say(f"Q{number}  {q['question']}")
    if q["options"]:
        say(f"    options: {' | '.join(q['options'])}")
    say(f"    cameras: {', '.join(cameras)} (latest frame each)")
    saved: list[Path] = []

    def on_feedback(feedback) -> None:
        for line in describe_step(feedback.step, camera_of, choice.is_replay):
            say(line)
        for index, image in zip(feedback.step.new_image_indices, feedback.images):
            path = args.out / f"q{number}_image{index}.png"
            save_image(image, path)
            saved.append(path)

    goal = SpatialQuery.Goal(question=q["question"], options=q["options"], problem_type=q["problem_type"],
                             cameras=cameras, frame_selection=SpatialQuery.Goal.SELECT_LATEST)
    status, answer = "rejected", None
    for _ in range(5):  # a goal sent while the node is still busy or buffering may be refused
        status, answer = client.query(goal, on_feedback, timeout_s=args.timeout, stop=stop)
        if status != "rejected" or stop.is_set():
            break
        time.sleep(1.0)
    tag = "[replay] " if choice.is_replay else ""
    if answer is None or status == "rejected":
        say(f"  {tag}no answer: {status}" + (f" ({answer.error})" if answer is not None else ""))
        return {"question": q["question"], "status": status, "correct": False, "truth": q["answer"]}
    ok = answer.finish_reason == "answer" and is_correct(answer.answer, q["answer"], q["problem_type"])
    spent = f"{answer.model_calls} model calls, {answer.latency_s:.2f} s"
    if answer.finish_reason == "answer":
        say(f"  {tag}answer: {printable(answer.answer, 200) or '(none)'}  (answer, {spent})")
    else:  # the model's dialogue ended without an answer: say why, then what it last wrote
        say(f"  {tag}no answer: {answer.finish_reason} ({answer.error}; {spent})")
        say(f"    last turn: {printable(answer.answer, 160)}")
    say(f"  ground truth: {q['answer']} ({q['why']})  {'✓ correct' if ok else '✗ wrong'}")
    if saved:
        say(f"  drawn images: {', '.join(str(p) for p in saved)}")
    return {"question": q["question"], "status": status, "answer": answer.answer, "truth": q["answer"],
            "correct": ok, "finish_reason": answer.finish_reason, "error": answer.error,
            "model_calls": answer.model_calls,
            "latency_s": answer.latency_s, "images": [str(p) for p in saved],
            "source_frames": [f"{h.frame_id}@{h.stamp.sec}.{h.stamp.nanosec:09d}" for h in answer.source_headers]}


def _follow_watch(client, w: dict, choice: EngineChoice, args, stop) -> dict:
    """Register the standing question, print its events for ``--watch-s`` seconds, unregister."""
    cameras = [layout.TOPICS[c] for c in w["cameras"]]
    say()
    say(f"Standing question (~/watch), followed for {args.watch_s:g} s: {w['question']}")
    say(f"    options: {' | '.join(w['options'])}; the robot crosses the table at frames "
        f"{layout.ROBOT_MOVES[0]}–{layout.ROBOT_MOVES[1]} of every {layout.N_FRAMES}-frame loop")
    watch_id, why = client.watch(w["question"], w["options"], w["problem_type"], cameras, min_interval_s=0.5)
    if not watch_id:
        say(f"  watch refused: {why}")
        return {"registered": False, "error": why, "events": []}
    seen, events, end = 0, [], time.monotonic() + args.watch_s
    tag = "[replay] " if choice.is_replay else ""
    while time.monotonic() < end and not stop.is_set():
        for event in client.watch_events[seen:]:
            seen += 1
            if event.watch_id != watch_id:
                continue
            frame = layout.frame_at(event.source_headers[0].stamp.sec * 1_000_000_000
                                    + event.source_headers[0].stamp.nanosec) if event.source_headers else None
            truth = w["answer_per_frame"][frame] if frame is not None else ""
            before = event.previous_answer or ("(no answer)" if events else "(first answer)")
            after = (printable(event.answer, 80) if event.finish_reason == "answer"
                     else f"no answer ({event.finish_reason}: {event.error})")
            say(f"  {tag}watch event: {before} -> {after} on frame {frame}; ground truth there: {truth}")
            events.append({"answer": event.answer, "previous_answer": event.previous_answer, "frame": frame,
                           "truth": truth, "finish_reason": event.finish_reason, "error": event.error})
        time.sleep(0.05)
    removed = client.unwatch(watch_id)
    say(f"  {len(events)} watch event(s); unwatched: {'yes' if removed else 'NO'}")
    return {"registered": True, "id": watch_id, "unwatched": removed, "events": events}


def _summary(results: list[dict], watch: dict | None, choice: EngineChoice, out: Path) -> int:
    correct = sum(r["correct"] for r in results)
    answered = sum(r["status"] == "succeeded" for r in results)
    (out / "answers.json").write_text(json.dumps(
        {"engine": choice.engine, "model": choice.model or None, "replay": choice.is_replay,
         "results": results, "watch": watch}, indent=1) + "\n")
    say()
    say(f"{'[replay] ' if choice.is_replay else ''}{correct}/{len(results)} correct, {answered}/{len(results)} "
        f"answered · drawn images and answers.json in {out}")
    return 0 if answered == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

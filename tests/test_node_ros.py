"""vilasr_node over real DDS: frames in, goals and questions, drawn outputs, diagnostics, parameters.

One node process (replay engine, autostart) serves the whole module; the test process publishes
frames and is the client. Per-query and buffer parameters are changed live through the node's
parameter service, each test restoring what it changed.
"""

from __future__ import annotations

import contextlib
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("ros_vilasr_interfaces")

from action_msgs.msg import GoalStatus  # noqa: E402
from node_harness import (  # noqa: E402
    Client,
    NodeProcess,
    answer_turn,
    compressed_msg,
    draw_turn,
    header,
    image_msg,
    scene,
    wait_for,
    write_transcripts,
)

from ros_vilasr.core.images import resized_size  # noqa: E402
from ros_vilasr_interfaces.action import SpatialQuery  # noqa: E402
from ros_vilasr_interfaces.msg import DrawOp, SpatialAnswer  # noqa: E402

FRONT = "/cam/front/image_raw"
SIDE = "/cam/side/image_raw/compressed"
KF = "/cam/kf/image_raw"
BAD = "/cam/bad/image_raw"
BAD_COMPRESSED = "/cam/bad/image_raw/compressed"
TOPICS = [FRONT, SIDE, KF, BAD, BAD_COMPRESSED]
W, H = 320, 240
KW, KH = 160, 120  # key-frame test frames
BOX = [30, 40, 130, 200]  # model grid (308 x 252 for 320 x 240 frames)

Q_CHOICE = "Which side of the table is the red cube on?"
Q_VIEWS = "Which camera sees the chair?"
Q_NUMBER = "How many metres between the cube and the chair?"
Q_CUT = "What does the recording not say?"
TRANSCRIPTS = [
    {"question": Q_CHOICE, "turns": [
        draw_turn("Object Mapper", [{"index": 1, "bbox_2d": BOX, "label": "red cube"}]),
        answer_turn("B")]},
    {"question": Q_VIEWS, "turns": [
        draw_turn("Object Mapper", [{"index": 2, "bbox_2d": BOX, "label": "chair"}]),
        answer_turn("the side camera")]},
    {"question": Q_NUMBER, "turns": [
        draw_turn("Path Tracer", [{"index": 1, "start_point_2d": [20, 30], "end_point_2d": [200, 150],
                                   "label": "gap"}]),
        answer_turn("2.5")]},
    {"question": Q_CUT, "turns": [draw_turn("Object Mapper", [{"index": 1, "bbox_2d": BOX, "label": "x"}])]},
]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node_ros")
    transcripts = write_transcripts(tmp / "transcripts.json", TRANSCRIPTS)
    proc = NodeProcess(tmp / "node.log", engine="replay", replay_file=str(transcripts), image_topics=TOPICS,
                       keyframe_min_interval_s=0.0, keyframes_per_camera=5, diagnostics_period_s=0.2)
    client = Client()
    try:
        client.wait_active(60.0)
        client.transcripts = transcripts
        client.proc = proc
        yield client
    finally:
        client.close()
        code = proc.stop()
        assert code == 0, f"node exited with {code}:\n{proc.log()[-3000:]}"


@contextlib.contextmanager
def parameters(client: Client, **values):
    """Set node parameters for the duration of a block (restoring the given old values)."""
    old = {}
    for name, (new, previous) in values.items():
        ok, reason = client.set_parameter(name, new)
        assert ok, reason
        old[name] = previous
    try:
        yield
    finally:
        for name, previous in old.items():
            assert client.set_parameter(name, previous)[0]


def front_frame(client: Client, sec: int, seed: int = 0):
    hdr = header(sec, "front_optical")
    client.deliver(FRONT, image_msg(scene(seed), hdr))
    return hdr


def same_header(a, b) -> bool:
    return (a.stamp.sec, a.stamp.nanosec, a.frame_id) == (b.stamp.sec, b.stamp.nanosec, b.frame_id)


# -- frames in ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("reliable", [False, True], ids=["best_effort_pub", "reliable_pub"])
@pytest.mark.parametrize("kind", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "jpeg", "png"])
def test_frames_from_another_process_reach_the_buffer(node, kind, reliable):
    hdr = header(10, f"cam_{kind}")
    if kind in ("jpeg", "png"):
        values = node.deliver(SIDE, compressed_msg(scene(1), hdr, kind), reliable)
    else:
        values = node.deliver(FRONT, image_msg(scene(1), hdr, kind), reliable)
    assert values["dropped"] == "0", values
    assert int(values["keyframes"]) >= 1 and int(values["buffer_bytes"]) > 0


def test_topics_not_in_image_topics_are_ignored(node):
    node.publish("/cam/unlisted/image_raw", image_msg(scene(2), header(1, "x")), wait_match=False)
    time.sleep(0.6)
    assert node.camera_values("/cam/unlisted/image_raw") is None
    assert all(node.camera_values(t) is not None for t in TOPICS)


# -- the action ----------------------------------------------------------------------------------

def test_goal_streams_one_feedback_per_step_and_a_typed_grounded_answer(node):
    hdr = front_frame(node, 100, seed=3)
    n_annotated, n_markers, n_answers = len(node.annotated), len(node.markers), len(node.answers)
    status, answer, feedback = node.query(Q_CHOICE, options=["A. left", "B. right"],
                                          problem_type="multiple choice", cameras=[FRONT])
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert [f.step.step for f in feedback] == [1, 2]
    assert [f.step.action for f in feedback] == ["Object Mapper", "Answer"]
    assert len(feedback[0].images) == 1 and len(feedback[1].images) == 0
    assert same_header(feedback[0].images[0].header, hdr)
    # typed answer, trace, provenance
    assert (answer.answer, answer.answer_kind, answer.choice) == ("B", SpatialAnswer.KIND_CHOICE, "B")
    assert answer.finish_reason == "answer" and answer.model_calls == 2
    assert [s.action for s in answer.steps] == ["Object Mapper", "Answer"]
    assert len(answer.source_headers) == 1 and same_header(answer.source_headers[0], hdr)
    assert same_header(answer.header, hdr)
    assert answer.model == f"replay:{node.transcripts}" and answer.latency_s > 0
    # the drawing, mapped back to source pixels
    op = answer.steps[0].ops[0]
    sx, sy = W / resized_size(W, H)[0], H / resized_size(W, H)[1]
    assert (op.kind, op.label, op.image_index, op.source_image_index) == (DrawOp.BOX, "red cube", 1, 1)
    assert list(op.model_coords) == pytest.approx(BOX)
    assert list(op.source_coords) == pytest.approx([BOX[0] * sx, BOX[1] * sy, BOX[2] * sx, BOX[3] * sy])
    assert same_header(op.header, hdr)
    assert list(answer.steps[0].new_image_indices) == [2]
    # ~/answer, ~/annotated and ~/markers carry the source frame's header
    wait_for(lambda: len(node.answers) > n_answers and len(node.markers) > n_markers
             and len(node.annotated) > n_annotated, what="outputs")
    assert node.answers[-1].question == Q_CHOICE and same_header(node.answers[-1].header, hdr)
    drawn = node.annotated[n_annotated:]
    assert len(drawn) == 1 and all(same_header(m.header, hdr) for m in drawn)
    assert (drawn[0].width, drawn[0].height, drawn[0].encoding) == (*resized_size(W, H), "rgb8")
    marker = node.markers[n_markers]
    assert same_header(marker.header, hdr) and marker.type == marker.POLYGON
    x1, y1, x2, y2 = BOX[0] * sx, BOX[1] * sy, BOX[2] * sx, BOX[3] * sy
    assert [c for p in marker.points for c in (p.x, p.y)] == pytest.approx([x1, y1, x2, y1, x2, y2, x1, y2])
    assert (marker.outline_color.r, marker.outline_color.g, marker.outline_color.b) == (1.0, 0.0, 0.0)  # PALETTE[0]


def test_latest_frame_of_every_camera_and_drawings_on_the_right_one(node):
    front = front_frame(node, 200, seed=4)
    side = header(201, "side_optical", nanosec=5)
    node.deliver(SIDE, compressed_msg(scene(5), side, "png"))
    n_annotated = len(node.annotated)
    status, answer, feedback = node.query(Q_VIEWS, cameras=[FRONT, SIDE.lstrip("/")])  # names resolve
    assert status == GoalStatus.STATUS_SUCCEEDED and answer.answer == "the side camera"
    assert answer.answer_kind == SpatialAnswer.KIND_TEXT
    assert [h.frame_id for h in answer.source_headers] == ["front_optical", "side_optical"]
    assert same_header(answer.source_headers[0], front) and same_header(answer.source_headers[1], side)
    assert same_header(answer.header, side)  # the newest source frame
    op = answer.steps[0].ops[0]
    assert (op.image_index, op.source_image_index) == (2, 2) and same_header(op.header, side)
    assert same_header(feedback[0].images[0].header, side)
    wait_for(lambda: len(node.annotated) > n_annotated, what="annotated")
    assert same_header(node.annotated[n_annotated].header, side)


def test_window_selection_spreads_key_frames_over_time(node):
    stamps = [300 + i for i in range(7)]
    for i, sec in enumerate(stamps):  # 7 distinct frames; keyframes_per_camera = 5 keeps the last 5
        front_frame(node, sec, seed=10 + i)
    node.wait_camera(FRONT, "keyframes", lambda n: n == 5)
    status, answer, _ = node.query(Q_CHOICE, cameras=[FRONT], frame_selection=SpatialQuery.Goal.SELECT_WINDOW,
                                   max_frames=3, window_s=60.0)
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert [h.stamp.sec for h in answer.source_headers] == [302, 304, 306]
    assert answer.header.stamp.sec == 306


def test_ask_answers_on_the_answer_topic_with_a_number(node):
    front_frame(node, 400, seed=20)
    n = len(node.answers)
    from std_msgs.msg import String
    node.ask_pub.publish(String(data=Q_NUMBER))
    wait_for(lambda: any(a.question == Q_NUMBER for a in node.answers[n:]), what="answer to ~/ask")
    answer = next(a for a in node.answers[n:] if a.question == Q_NUMBER)
    assert (answer.answer_kind, answer.value) == (SpatialAnswer.KIND_NUMBER, 2.5)
    line = answer.steps[0].ops[0]
    assert line.kind == DrawOp.LINE and answer.header.stamp.sec == 400


def test_goal_max_calls_limits_the_dialogue(node):
    front_frame(node, 500, seed=21)
    status, answer, feedback = node.query(Q_CHOICE, cameras=[FRONT], max_calls=1)
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert answer.finish_reason == "max_calls" and answer.model_calls == 1 and len(feedback) == 1


def test_an_engine_failure_aborts_the_goal_with_the_reason(node):
    front_frame(node, 550, seed=25)
    status, answer, feedback = node.query(Q_CUT, cameras=[FRONT])
    assert status == GoalStatus.STATUS_ABORTED and len(feedback) == 1
    assert answer.finish_reason == "engine_error" and answer.answer.startswith("<think>Let me mark it.")
    assert "no more assistant turns" in answer.error
    wait_for(lambda: f"query {Q_CUT!r} ended with engine_error: the recorded transcript has no more assistant "
             "turns" in node.proc.log(), what="the reason in the log")
    assert front_frame(node, 551, seed=26) and node.query(Q_CHOICE, cameras=[FRONT])[0] == GoalStatus.STATUS_SUCCEEDED


@pytest.mark.parametrize("cameras, why", [(["/cam/nowhere"], "unknown camera '/cam/nowhere'"),
                                         ([], "the question is empty")])
def test_unanswerable_goals_are_rejected_with_a_reason(node, cameras, why):
    question = "" if "empty" in why else Q_CHOICE
    assert why in node.rejection(question, cameras=cameras)
    wait_for(lambda: why in node.proc.log(), what="the rejection reason in the log")


def test_enable_pauses_buffering_and_inference_without_unloading_the_model(node):
    front_frame(node, 560, seed=27)
    assert "paused" in node.enable(False)
    try:
        assert "inference is paused (~/enable false)" in node.rejection(Q_CHOICE, cameras=[FRONT])
        kept = int(node.camera_values(FRONT)["keyframes"])
        front_frame(node, 561, seed=28)  # received, not kept
        values = node.wait_camera(FRONT, "keyframes", lambda n: n == kept)
        assert wait_for(lambda: (node.model_values() or {}).get("enabled") == "False", what="diagnostics")
        assert node.model_values()["model_state"] == "ready" and values["dropped"] == "0"
    finally:
        assert "enabled" in node.enable(True)
    hdr = front_frame(node, 562, seed=29)
    status, answer, _ = node.query(Q_CHOICE, cameras=[FRONT])
    assert status == GoalStatus.STATUS_SUCCEEDED and same_header(answer.source_headers[0], hdr)


# -- malformed frames ----------------------------------------------------------------------------

def _bad_frames():
    good = image_msg(scene(30), header(1, "bad"))
    def raw(**changes):
        msg = image_msg(scene(30), header(1, "bad"))
        for k, v in changes.items():
            setattr(msg, k, v)
        return msg
    jpeg = compressed_msg(scene(31), header(1, "bad"), "jpeg")
    truncated = compressed_msg(scene(31), header(1, "bad"), "jpeg")
    truncated.data = bytes(jpeg.data)[: len(jpeg.data) // 2]
    garbage = compressed_msg(scene(31), header(1, "bad"), "jpeg")
    garbage.data = b"\xff\xd8\xff" + bytes(500) + b"\xff\xd9"
    return [
        (BAD, raw(height=H + 1), "size_mismatch"),  # data one row short
        (BAD, raw(data=bytes(good.data)[:-W * 3]), "size_mismatch"),  # truncated rows
        (BAD, raw(step=W), "bad_step"),
        (BAD, raw(encoding="16UC1"), "unsupported_encoding"),
        (BAD, raw(width=0, height=0, step=0, data=b""), "empty"),
        (BAD_COMPRESSED, truncated, "undecodable"),
        (BAD_COMPRESSED, garbage, "undecodable"),
    ]


def test_malformed_frames_are_counted_logged_once_and_dropped(node):
    cases = _bad_frames()
    for topic, msg, _ in cases:
        node.deliver(topic, msg)
    expected = {}
    for topic, _, kind in cases:
        expected.setdefault(topic, {}).setdefault(kind, 0)
        expected[topic][kind] += 1
    for topic, kinds in expected.items():
        values = node.wait_camera(topic, "dropped", lambda n, want=sum(kinds.values()): n >= want)
        for kind, count in kinds.items():
            assert values[f"dropped_{kind}"] == str(count), values
        assert values["keyframes"] == "0"
    log = node.proc.log()
    for topic, kinds in expected.items():
        warnings = [line for line in log.splitlines() if f"dropping frames from {topic}:" in line]
        assert len(warnings) == len(kinds), warnings  # once per camera and fault
    assert "data has" in log and "unsupported encoding '16UC1'" in log and "truncated JPEG" in log
    # the node keeps serving
    front_frame(node, 600, seed=22)
    assert node.query(Q_CHOICE, cameras=[FRONT])[0] == GoalStatus.STATUS_SUCCEEDED


# -- parameters (each shows its effect) ------------------------------------------------------------------

@pytest.mark.parametrize("name, value, finish_reason", [
    ("max_calls", 1, "max_calls"),
    ("max_images", 1, "too_many_images"),
])
def test_budget_parameters_apply_to_the_next_query(node, name, value, finish_reason):
    front_frame(node, 700, seed=23)
    default = {"max_calls": 10, "max_images": 45}[name]
    assert node.query(Q_CHOICE, cameras=[FRONT])[1].finish_reason == "answer"
    with parameters(node, **{name: (value, default)}):
        assert node.query(Q_CHOICE, cameras=[FRONT])[1].finish_reason == finish_reason


def test_max_pixels_sets_the_model_grid_and_coordinates_still_map_to_source(node):
    front_frame(node, 800, seed=24)
    small = 12544  # 16 * 28 * 28
    with parameters(node, max_pixels=(small, 351232)):
        _, answer, feedback = node.query(Q_CHOICE, cameras=[FRONT])
    image = feedback[0].images[0]
    assert (image.width, image.height) == resized_size(W, H, small) == (112, 84)
    op = answer.steps[0].ops[0]
    sx = W / 112
    assert op.source_coords[0] == pytest.approx(BOX[0] * sx)


def test_keyframe_and_buffer_parameters(node):
    def flush():  # keyframe_max_age_s: everything older is dropped, the latest frames included
        with parameters(node, keyframe_max_age_s=(0.1, 60.0)):
            time.sleep(0.3)
            node.wait_camera(KF, "keyframes", lambda n: n == 0)
            node.wait_camera(KF, "buffer_bytes", lambda n: n == 0)

    def burst(seeds, sec=900):
        for i, seed in enumerate(seeds):
            node.deliver(KF, image_msg(scene(seed, KW, KH), header(sec + i, "kf")), reliable=True)

    def keyframes():
        time.sleep(0.45)  # two diagnostics periods
        return int(node.camera_values(KF)["keyframes"])

    burst([40, 41, 42])
    assert keyframes() == 3  # defaults of this node: no interval, distinct frames
    flush()
    with parameters(node, keyframe_min_interval_s=(60.0, 0.0)):
        burst([43, 44, 45])
        assert keyframes() == 1
    flush()
    burst([46, 46, 46, 46])  # the same image: only the first is a key frame at threshold 0.02
    assert keyframes() == 1
    flush()
    with parameters(node, keyframe_change_threshold=(0.0, 0.02)):
        burst([47, 47, 47, 47])
        assert keyframes() == 4
    flush()
    with parameters(node, keyframes_per_camera=(2, 5)):
        burst([48, 49, 50, 51])
        assert keyframes() == 2
    flush()
    frame_bytes = KW * KH * 3
    with parameters(node, buffer_memory_mb=(4.5 * frame_bytes / 2**20, 512.0)):
        burst([52, 53, 54, 55])
        assert keyframes() == 2  # a third, plus room for the next frame (received twice), would not fit
        buffer = next(s for _, a in reversed(node.diagnostics) for s in a.status if s.name.endswith("frame buffer"))
        values = {kv.key: int(kv.value) for kv in buffer.values}
        assert values["bytes"] <= values["budget_bytes"]
    with parameters(node, buffer_memory_mb=(0.1, 512.0)):  # a 230 kB frame alone is over budget
        before = int(node.camera_values(KF)["dropped"])
        node.deliver(KF, image_msg(scene(56), header(999, "kf")), reliable=True)
        node.wait_camera(KF, "dropped_too_large", lambda n: n >= 1)
        assert int(node.camera_values(KF)["dropped"]) == before + 1
    flush()


def test_diagnostics_period(node):
    def rate(seconds=1.5):
        start = time.monotonic()
        time.sleep(seconds)
        return sum(1 for t, _ in list(node.diagnostics) if t >= start) / seconds
    assert rate() > 3.0  # 0.2 s in this node
    with parameters(node, diagnostics_period_s=(1.0, 0.2)):
        time.sleep(0.3)
        assert rate(2.0) <= 1.5
    values = node.model_values()
    assert values["lifecycle"] == "active" and values["model_state"] == "ready"
    assert int(values["queries_answered"]) >= 1


@pytest.mark.parametrize("name, value, why", [
    ("model", "someone/else", "read-only after configure"),
    ("engine", "transformers", "read-only after configure"),
    ("image_reliability", "sometimes", "must be one of"),
    ("dtype", "int3", "must be one of"),
    ("image_topics", [], "at least one"),
    ("system_prompt_file", "/nonexistent/prompt.txt", "is not a file"),
    ("max_calls", 0, ""),  # outside the declared range
])
def test_invalid_or_read_only_parameter_changes_are_refused_with_a_reason(node, name, value, why):
    ok, reason = node.set_parameter(name, value)
    assert not ok and why in reason

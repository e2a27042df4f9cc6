"""vilasr_node's lifecycle and long queries with a real (tiny) transformers model.

One node process (autostart off, reliable camera QoS, the tiny random Qwen2.5-VL on CPU) is driven
through its lifecycle by the test: a failed activation, cancel mid-generation, max_pending,
deactivate / activate, and a swap to the openai engine against a local fake server that records
what the node sends (model, sampling, system prompt).
"""

from __future__ import annotations

import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("ros_vilasr_interfaces")
pytest.importorskip("torch")

from action_msgs.msg import GoalStatus  # noqa: E402
from fake_chat_server import FakeChatServer  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from node_harness import Client, NodeProcess, answer_turn, draw_turn, header, image_msg, scene, wait_for  # noqa: E402
from std_msgs.msg import String  # noqa: E402

CAM = "/c/cam"
LONG = 30000  # tokens: minutes of generation for the tiny model, so a query is running when we act


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from ros_vilasr.core.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def node(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("node_lifecycle")
    proc = NodeProcess(tmp / "node.log", engine="transformers", model=str(tiny_model), device="cuda:99",
                       greedy=True, max_new_tokens=LONG, max_pending=2, autostart=False,
                       image_reliability="reliable", image_topics=[CAM], diagnostics_period_s=0.2,
                       buffer_memory_mb=64)  # an integer for a double parameter: accepted as 64.0
    client = Client("vilasr_lifecycle_client")
    client.proc, client.tmp, client.tiny_model_id = proc, tmp, str(tiny_model)
    try:
        yield client
    finally:
        client.close()
        code = proc.stop()
        assert code == 0, f"node exited with {code}:\n{proc.log()[-3000:]}"


def send_frame(node: Client, sec: int) -> None:
    node.deliver(CAM, image_msg(scene(sec), header(sec, "cam")), reliable=True)


def running(node: Client) -> bool:
    values = node.model_values()
    return bool(values and values["running"])


def test_autostart_off_then_a_failed_activation_then_active(node):
    wait_for(lambda: node.state() == "unconfigured", 30.0, interval=0.2, what="the node")
    assert not node.diagnostics  # nothing configured, nothing published
    assert node.transition(Transition.TRANSITION_CONFIGURE)
    assert node.state() == "inactive"
    wait_for(lambda: node.model_values() and node.model_values()["model_state"] == "not loaded", what="diagnostics")
    buffer = next(s for s in node.diagnostics[-1][1].status if s.name.endswith("frame buffer"))
    assert {kv.key: kv.value for kv in buffer.values}["budget_bytes"] == str(64 * 2**20)
    # device: cuda:99 does not exist here, so activation fails, says why and stays inactive
    assert not node.transition(Transition.TRANSITION_ACTIVATE)
    assert node.state() == "inactive"
    wait_for(lambda: "on_activate failed" in node.proc.log(), what="the failure in the log")
    wait_for(lambda: node.model_values()["model_state"].startswith("failed: "), what="model_state failed")
    assert node.set_parameter("device", "cpu")[0]
    assert node.transition(Transition.TRANSITION_ACTIVATE)
    assert node.state() == "active"
    wait_for(lambda: node.model_values()["model_state"] == "ready", what="model ready")


def test_reliable_subscription_warns_about_a_best_effort_camera(node):
    node.publish(CAM, image_msg(scene(1), header(1, "cam")), reliable=False, wait_match=False)
    values = node.wait_camera(CAM, "incompatible_qos", lambda n: n >= 1)
    assert values["received"] == "0"
    assert "offers a QoS incompatible" in node.proc.log() and "RELIABILITY" in node.proc.log()
    node.drop_publisher(CAM, reliable=False)
    send_frame(node, 2)  # a reliable camera is received


def test_cancel_mid_generation_then_the_next_goal_is_served(node):
    send_frame(node, 3)
    handle = node.send_goal("Where is the cup?", cameras=[CAM])
    assert handle is not None
    wait_for(lambda: running(node), what="the query to run")
    wait_for(lambda: handle.status == GoalStatus.STATUS_EXECUTING, what="the goal to execute")
    started = time.monotonic()
    handle.cancel_goal_async()
    result = node.result(handle, timeout=30.0)
    assert result.status == GoalStatus.STATUS_CANCELED
    assert result.result.answer.finish_reason == "cancelled"
    assert time.monotonic() - started < 10.0  # stopped inside generate, not after 30000 tokens
    # max_new_tokens applies to the next query: it now ends after 16 tokens
    assert node.set_parameter("max_new_tokens", 16)[0]
    status, answer, feedback = node.query("Where is the cup?", cameras=[CAM], timeout=30.0)
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert (answer.finish_reason, answer.completion_tokens, answer.model_calls) == ("length", 16, 1)
    assert len(feedback) == 1 and answer.model == node.tiny_model_id
    assert node.set_parameter("max_new_tokens", LONG)[0]


def test_goals_beyond_max_pending_are_rejected_with_a_reason(node):
    send_frame(node, 4)
    first = node.send_goal("first question", cameras=[CAM])
    second = node.send_goal("second question", cameras=[CAM])
    assert first is not None and second is not None  # one running, one queued: max_pending = 2
    wait_for(lambda: first.status == GoalStatus.STATUS_EXECUTING, what="the first goal to execute")
    assert second.status == GoalStatus.STATUS_ACCEPTED  # queued behind it
    assert "queries pending (max_pending = 2)" in node.rejection("third question", cameras=[CAM])
    n = len(node.answers)
    node.ask_pub.publish(String(data="fourth question"))
    rejected = wait_for(lambda: next((a for a in node.answers[n:] if a.question == "fourth question"), None),
                        what="the rejected ~/ask answer")
    assert rejected.finish_reason == "rejected" and "max_pending = 2" in rejected.error
    second.cancel_goal_async()
    assert node.result(second).status == GoalStatus.STATUS_CANCELED  # cancelled while queued
    first.cancel_goal_async()
    assert node.result(first, timeout=30.0).status == GoalStatus.STATUS_CANCELED


def test_deactivate_releases_the_engine_and_activate_serves_again(node):
    send_frame(node, 5)
    running_goal = node.send_goal("Where was the cup?", cameras=[CAM])  # a long one, still running
    wait_for(lambda: running_goal.status == GoalStatus.STATUS_EXECUTING, what="the goal to execute")
    assert node.transition(Transition.TRANSITION_DEACTIVATE)
    result = node.result(running_goal)  # ended by the deactivation, with its result
    assert result.status == GoalStatus.STATUS_ABORTED and result.result.answer.finish_reason == "cancelled"
    assert node.state() == "inactive"
    wait_for(lambda: node.model_values()["model_loaded"] == "False", what="engine released")
    assert node.model_values()["model_state"] == "released" and "engine released" in node.proc.log()
    assert node.model_values()["lifecycle"] == "inactive"
    assert node.transition(Transition.TRANSITION_ACTIVATE)
    send_frame(node, 6)
    assert node.set_parameter("max_new_tokens", 8)[0]
    status, answer, _ = node.query("Where is the cup now?", cameras=[CAM], timeout=30.0)
    assert status == GoalStatus.STATUS_SUCCEEDED and answer.completion_tokens == 8


def draw_once_then_answer(body: dict) -> tuple[str, str, int]:
    """The fake server's model: draws once, then answers."""
    if not any(m["role"] == "assistant" for m in body["messages"]):
        return draw_turn("Object Mapper", [{"index": 1, "bbox_2d": [1, 2, 30, 40], "label": "cup"}]), "stop", 20
    return answer_turn("A"), "stop", 20


def test_engine_swap_to_openai_uses_url_model_sampling_and_system_prompt(node):
    ok, reason = node.set_parameter("engine", "openai")
    assert not ok and "read-only after configure" in reason
    assert node.transition(Transition.TRANSITION_DEACTIVATE)
    assert node.transition(Transition.TRANSITION_CLEANUP)
    assert node.state() == "unconfigured"
    server = FakeChatServer(draw_once_then_answer)
    prompt = node.tmp / "prompt.txt"
    prompt.write_text("You are a careful robot. The first image is {width} x {height}.")
    try:
        for name, value in [("engine", "openai"), ("model", "served-vilasr"),
                            ("openai_base_url", server.base_url),
                            ("system_prompt_file", str(prompt)), ("temperature", 0.3), ("top_p", 0.5),
                            ("greedy", False), ("max_new_tokens", 512)]:
            assert node.set_parameter(name, value) == (True, ""), name
        assert node.transition(Transition.TRANSITION_CONFIGURE)
        assert node.transition(Transition.TRANSITION_ACTIVATE)
        send_frame(node, 7)
        status, answer, feedback = node.query("Which cup?", options=["A. red", "B. blue"], cameras=[CAM])
        assert status == GoalStatus.STATUS_SUCCEEDED
        assert (answer.choice, answer.model, answer.model_calls, len(feedback)) == ("A", "served-vilasr", 2, 2)
        assert answer.prompt_tokens == 200 and answer.completion_tokens == 40
        first = server.requests[0]
        assert first["path"] == "/v1/chat/completions" and first["model"] == "served-vilasr"
        assert (first["temperature"], first["top_p"], first["max_tokens"]) == (0.3, 0.5, 512)
        assert first["messages"][0] == {"role": "system",
                                        "content": "You are a careful robot. The first image is 308 x 252."}
        # greedy applies at the next activation: temperature 0
        assert node.set_parameter("greedy", True)[0]
        assert node.transition(Transition.TRANSITION_DEACTIVATE)
        assert node.transition(Transition.TRANSITION_ACTIVATE)
        send_frame(node, 8)
        assert node.query("Which cup?", cameras=[CAM])[0] == GoalStatus.STATUS_SUCCEEDED
        assert server.requests[-1]["temperature"] == 0.0
    finally:
        server.close()


@pytest.mark.parametrize("dtype, expected", [("bfloat16", "bfloat16"), ("float32", "float32"), ("auto", "float32")])
def test_device_and_dtype_parameters_reach_the_transformers_engine(tiny_model, dtype, expected):
    """The node builds its engine with engine_arguments (the same call, without ROS here)."""
    from ros_vilasr.core.engines import create_engine
    from ros_vilasr.node import params
    from ros_vilasr.node.queries import engine_arguments

    values = {p.name: p.default for p in params.PARAMETERS} | {"model": str(tiny_model), "device": "cpu",
                                                               "dtype": dtype}
    name, model, options = engine_arguments(values)
    engine = create_engine(name, model, **options)
    try:
        assert engine.device == "cpu" and str(engine.model.dtype) == f"torch.{expected}"
    finally:
        engine.close()

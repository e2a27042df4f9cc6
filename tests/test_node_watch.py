"""Standing questions over real DDS: ~/watch, ~/watch_events, ~/unwatch.

The model is the project's fake OpenAI-compatible server (a test double: no model server runs
here) with a little sight: it finds the red and the blue square in the image it is sent and says
whether red is left (A) or right (B) of blue. The camera shows a sequence in which the red square
moves from the left of the blue one to its right, leaving the view on the way (the model then
cannot answer); every frame is a key frame (the background flickers), so the watch is asked again
and again, and must speak exactly when its outcome changes.
"""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("ros_vilasr_interfaces")

from fake_chat_server import FakeChatServer  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from node_harness import Client, NodeProcess, answer_turn, header, image_msg, wait_for  # noqa: E402
from PIL import Image  # noqa: E402

from ros_vilasr_interfaces.msg import SpatialAnswer  # noqa: E402
from ros_vilasr_interfaces.srv import Unwatch, Watch  # noqa: E402

CAM = "/watch/cam/image_raw"
QUESTION = "Is the red square left or right of the blue square?"
OPTIONS = ["A. left", "B. right"]


class Sighted:
    """Answers A when the red square's centre is left of the blue one's, B otherwise; with no red
    square in view, writes a turn with neither a drawing nor an answer (a tool error)."""

    def __init__(self):
        self.asked = 0
        self.lock = threading.Lock()

    def __call__(self, body: dict):
        url = next(p["image_url"]["url"] for m in body["messages"] if isinstance(m["content"], list)
                   for p in m["content"] if p["type"] == "image_url")
        rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")).astype(int)
        red = np.argwhere((rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60))[:, 1]
        blue = np.argwhere((rgb[..., 2] > 200) & (rgb[..., 0] < 60) & (rgb[..., 1] < 60))[:, 1].mean()
        with self.lock:
            self.asked += 1
        if not red.size:
            return "<think>I cannot find the red square.</think>", "stop", 5
        return answer_turn("A" if red.mean() < blue else "B"), "stop", 5


def frame(red_x: int | None, k: int) -> np.ndarray:
    rgb = np.full((240, 320, 3), 90 + 60 * (k % 2), np.uint8)  # flickers: every frame is a key frame
    rgb[100:140, 150:190] = (30, 30, 230)  # blue, x 150..190
    if red_x is not None:
        rgb[100:140, red_x:red_x + 40] = (230, 30, 30)
    return rgb


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    model = Sighted()
    server = FakeChatServer(model)
    proc = NodeProcess(tmp_path_factory.mktemp("watch") / "node.log", engine="openai", model="served",
                       openai_base_url=server.base_url, image_topics=[CAM], keyframe_min_interval_s=0.0,
                       max_watches=2, max_pixels=76800)
    client = Client("watch_client")
    events: list[SpatialAnswer] = []
    client.node.create_subscription(SpatialAnswer, "/vilasr_node/watch_events", events.append, 50)
    watch = client.node.create_client(Watch, "/vilasr_node/watch")
    unwatch = client.node.create_client(Unwatch, "/vilasr_node/unwatch")
    try:
        client.wait_active(60.0)
        yield {"client": client, "model": model, "events": events, "watch": watch, "unwatch": unwatch, "k": [0]}
    finally:
        client.close()
        code = proc.stop()
        server.close()
        assert code == 0, f"node exited with {code}:\n{proc.log()[-3000:]}"


def call(client, service, request):
    assert service.wait_for_service(timeout_sec=20.0)
    future = service.call_async(request)
    return wait_for(lambda: future.done() and future, what="service response").result()


def show(n, red_x: int | None, frames: int = 4) -> None:
    """``frames`` frames with the red square at ``red_x``, each asked about before the next."""
    for _ in range(frames):
        asked = n["model"].asked
        for _attempt in range(10):  # camera topics are best effort: a lost frame is sent again
            n["k"][0] += 1
            n["client"].publish(CAM, image_msg(frame(red_x, n["k"][0]), header(n["k"][0], "watch")))
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and n["model"].asked == asked:
                time.sleep(0.02)
            if n["model"].asked > asked:
                break
        else:
            raise AssertionError("the watch was not asked again")


def test_a_watch_speaks_exactly_when_the_relation_changes(node):
    client = node["client"]
    refused = call(client, node["watch"], Watch.Request(question=QUESTION, cameras=["/elsewhere/image_raw"]))
    assert not refused.success and "unknown camera '/elsewhere/image_raw'" in refused.message and refused.id == 0
    registered = call(client, node["watch"], Watch.Request(question=QUESTION, options=OPTIONS,
                                                           problem_type="multiple choice", cameras=[CAM]))
    assert registered.success and registered.id > 0
    show(node, red_x=60)  # red left of blue, four times
    wait_for(lambda: node["events"], what="the first answer")
    show(node, red_x=None, frames=2)  # red leaves the view: the robot hears once that no answer came, and why
    wait_for(lambda: len(node["events"]) >= 2, what="the failed ask")
    show(node, red_x=250)  # red comes back on the right of blue
    wait_for(lambda: len(node["events"]) >= 3, what="the change")
    show(node, red_x=260)
    assert [(e.watch_id, e.previous_answer, e.choice, e.finish_reason) for e in node["events"]] == [
        (registered.id, "", "A", "answer"), (registered.id, "A", "", "tool_error"), (registered.id, "", "B", "answer")]
    assert node["events"][1].error == "no usable operation" and node["events"][2].answer == "B"
    assert node["events"][2].question == QUESTION

    # it survives deactivate / activate
    assert client.transition(Transition.TRANSITION_DEACTIVATE)
    assert client.transition(Transition.TRANSITION_ACTIVATE)
    show(node, red_x=40, frames=2)
    wait_for(lambda: len(node["events"]) >= 4, what="the change back")
    assert (node["events"][3].previous_answer, node["events"][3].answer) == ("B", "A")

    # bounded, and gone once unwatched
    second = call(client, node["watch"], Watch.Request(question="Is red above blue?", cameras=[CAM]))
    full = call(client, node["watch"], Watch.Request(question="A third?", cameras=[CAM]))
    assert second.success and not full.success and "(max_watches = 2)" in full.message
    for watch_id in (registered.id, second.id):
        assert call(client, node["unwatch"], Unwatch.Request(id=watch_id)).success
    assert not call(client, node["unwatch"], Unwatch.Request(id=registered.id)).success
    asked, received = node["model"].asked, int(client.camera_values(CAM)["received"])

    def received_one():  # best effort: send until one arrives
        node["k"][0] += 1
        client.publish(CAM, image_msg(frame(250, node["k"][0]), header(node["k"][0], "watch")))
        time.sleep(0.3)
        return int(client.camera_values(CAM)["received"]) > received
    wait_for(received_one, what="a frame received")
    time.sleep(0.5)
    assert node["model"].asked == asked and len(node["events"]) == 4

"""Concurrent goals are batched in the node (real DDS, the node's real ``openai`` engine, the
project's fake OpenAI-compatible server as the model: a test double, no model server runs here).

The fake model draws on a dialogue's first turn and answers on its second. Each request it gets
waits up to a second for company, so the requests of one engine call — which the openai engine
sends together — are seen in flight at the same time; requests of separate calls never are.
"""

from __future__ import annotations

import json
import threading

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("ros_vilasr_interfaces")

from action_msgs.msg import GoalStatus  # noqa: E402
from fake_chat_server import FakeChatServer  # noqa: E402
from node_harness import Client, NodeProcess, answer_turn, draw_turn, header, image_msg, scene, wait_for  # noqa: E402

CAM = "/batch/cam/image_raw"


class PairingModel:
    def __init__(self):
        self.cond = threading.Condition()
        self.in_flight: set[tuple[str, int]] = set()  # (question, turn)
        self.together: list[set[tuple[str, int]]] = []  # requests seen in flight at once

    def __call__(self, body: dict):
        text = json.dumps(body["messages"])
        question = next(q for q in ("question A", "question B") if q in text)
        turn = 1 + sum(m["role"] == "assistant" for m in body["messages"])
        with self.cond:
            self.in_flight.add((question, turn))
            if len(self.in_flight) > 1:
                self.together.append(set(self.in_flight))
            self.cond.notify_all()
            self.cond.wait_for(lambda: len(self.in_flight) > 1, timeout=1.0)
        with self.cond:
            self.in_flight.discard((question, turn))
        if turn == 1:
            return draw_turn("Object Mapper", [{"index": 1, "bbox_2d": [10, 10, 60, 60], "label": "chair"}]), "stop", 9
        return answer_turn("A"), "stop", 5


@pytest.mark.parametrize("max_concurrent", [2, 1])
def test_a_goal_arriving_while_another_runs_joins_its_next_engine_call(tmp_path, max_concurrent):
    model = PairingModel()
    server = FakeChatServer(model)
    proc = NodeProcess(tmp_path / "node.log", engine="openai", model="served", openai_base_url=server.base_url,
                       image_topics=[CAM], keyframe_min_interval_s=0.0, max_concurrent=max_concurrent)
    client = Client("batching_client")
    try:
        client.wait_active(60.0)
        client.deliver(CAM, image_msg(scene(1), header(1, "batch")))
        first = client.send_goal("question A", cameras=[CAM])
        wait_for(lambda: model.in_flight, what="A's first turn at the model")
        second = client.send_goal("question B", cameras=[CAM])  # queued while A's turn runs
        results = [client.result(h, 30.0) for h in (first, second)]
        assert [(r.status, r.result.answer.answer, r.result.answer.model_calls) for r in results] == [
            (GoalStatus.STATUS_SUCCEEDED, "A", 2)] * 2
        if max_concurrent == 2:  # B's first turn went out in the same call as A's second
            assert model.together == [{("question A", 2), ("question B", 1)}]
        else:  # one query at a time: never two requests at once
            assert model.together == []
    finally:
        client.close()
        code = proc.stop()
        server.close()
        assert code == 0, f"node exited with {code}:\n{proc.log()[-3000:]}"

"""The openai engine over real HTTP against a local server; the vLLM engine's request building,
stepping and cancel against a double of the vLLM API it calls (vLLM runs on GPU machines only)."""

import base64
import io

import pytest
from fake_chat_server import FakeChatServer
from PIL import Image

from ros_vilasr.core import chat
from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.engines import create_engine
from ros_vilasr.core.engines.vllm import build_prompt, engine_args, sampling_args
from ros_vilasr.core.session import Reply, Session

DRAW = ('<think>box</think>\nAction: Object Mapper\n```json\n'
        '[{"index": 1, "bbox_2d": [1, 2, 30, 40], "label": "cup"}]\n```')
ANSWER = "<think>done</think>\nAction: Answer\n<answer>B</answer>"


@pytest.fixture
def script():
    """Replies served in order: (text, finish_reason) or an HTTP error status."""
    return []


@pytest.fixture
def server(script):
    def respond(body):
        reply = script.pop(0)
        return reply if isinstance(reply, int) else (*reply, 7)

    fake = FakeChatServer(respond)
    yield fake
    fake.close()


def session():
    return Session([Image.new("RGB", (280, 224), (0, 128, 255))], "Which side?", options=["A. l", "B. r"],
                   problem_type="multiple choice")


def test_openai_engine_multi_turn_over_http(server, script):
    script += [(DRAW, "stop"), (ANSWER, "stop")]
    engine = create_engine("openai", "vilasr-7b", base_url=server.base_url, api_key="k", temperature=0.5,
                           top_p=0.8)
    s = session()
    run_sessions([s], engine)
    assert (s.finish_reason, s.answer, s.prompt_tokens, s.completion_tokens) == ("answer", "B", 200, 14)
    first, body = server.requests
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer k"
    assert (body["model"], body["temperature"], body["top_p"]) == ("vilasr-7b", 0.5, 0.8)
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][2]["content"] == DRAW
    urls = [p["image_url"]["url"] for m in body["messages"] if isinstance(m["content"], list)
            for p in m["content"] if p["type"] == "image_url"]
    assert len(urls) == 2
    drawn = Image.open(io.BytesIO(base64.b64decode(urls[1].split(",", 1)[1])))
    assert drawn.size == (280, 224) and drawn.getpixel((1, 20)) == (255, 0, 0)  # the box it drew


def test_openai_engine_errors_and_length(server, script):
    script += [503, ("<think>cut", "length")]
    engine = create_engine("openai", "m", base_url=server.base_url)
    a, b = session(), session()
    run_sessions([a], engine)
    run_sessions([b], engine)
    assert a.finish_reason == "engine_error" and "HTTP 503" in a.error
    assert b.finish_reason == "length"
    dead = create_engine("openai", "m", base_url="http://127.0.0.1:9/v1", timeout_s=2)
    c = session()
    run_sessions([c], dead)
    assert c.finish_reason == "engine_error" and "failed" in c.error


def test_vllm_request_building_without_vllm():
    s = session()
    s.submit(Reply(DRAW))
    prompt = build_prompt(s.request())
    assert prompt["prompt"] == chat.render(s.messages, add_generation_prompt=True)
    assert prompt["prompt"].count("<|image_pad|>") == 2 and prompt["prompt"].endswith("<|im_start|>assistant\n")
    assert prompt["multi_modal_data"]["image"] == s.images
    args = engine_args("ckpt", max_images=45)
    assert args["enable_prefix_caching"] and args["limit_mm_per_prompt"] == {"image": 45}
    assert args["mm_processor_kwargs"]["max_pixels"] == 351232
    assert sampling_args(s.request(), 0.75, 0.9, 1)["temperature"] == 0.75
    greedy = sampling_args(s.request(), 0, 0.9, None)
    assert (greedy["temperature"], greedy["top_p"]) == (0.0, 1.0)
    with pytest.raises(ImportError):
        create_engine("vllm", "embedded")  # imported only when chosen; absent on CPU machines


def test_unknown_engine_and_missing_model():
    with pytest.raises(ValueError, match="unknown engine"):
        create_engine("tensorrt", "m")
    with pytest.raises(ValueError):
        create_engine("replay", None)


def test_chat_rendering_is_the_qwen_template_and_engines_forget_finished_dialogues(tmp_path):
    from ros_vilasr.core.engines.hf import TransformersEngine
    from ros_vilasr.core.images import NO_RESIZE_MAX_PIXELS
    from ros_vilasr.core.processor import load_processor
    from ros_vilasr.core.tiny_model import build_tiny_model

    path = build_tiny_model(tmp_path / "tiny")
    processor = load_processor(path, max_pixels=NO_RESIZE_MAX_PIXELS)
    s = Session([Image.new("RGB", (280, 224)), Image.new("RGB", (224, 280))], "Which side?", kind="views")
    s.submit(Reply(DRAW))
    for prompt in (False, True):
        assert chat.render(s.messages, prompt) == processor.apply_chat_template(
            chat.to_hf(s.messages), tokenize=False, add_generation_prompt=prompt)
    engine = TransformersEngine(str(path), device="cpu", temperature=0)
    done = session()
    run_sessions([done], engine)
    assert done.done and done.key not in engine._encodings  # noqa: SLF001 - the cache is the point


def test_warm_up_pays_the_resize_import_for_engines_without_their_own():
    """The node warms every engine at activate; the first question then does not import transformers."""
    import subprocess
    import sys

    resize = "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl"
    code = ("import sys\nfrom ros_vilasr.core.engines import create_engine, warm_up\n"
            "engine = create_engine('openai', 'm', base_url='http://127.0.0.1:9/v1')\n"
            f"before = {resize!r} in sys.modules\nwarm_up(engine)\nprint(before, {resize!r} in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


class FakeVLLM:
    """A double of the part of vLLM's API the engine calls (``LLM(**engine_args)``,
    ``get_tokenizer``, ``llm_engine.add_request / step / abort_request``, ``RequestOutput``), since
    vLLM cannot run on CPU machines: one token per step, a request finishes after its scripted text."""

    PLACEHOLDERS = {"<|image_pad|>": 151655, "<|video_pad|>": 151656}
    scripts: list[str] = []  # texts of the next requests, in order; "" never finishes

    def __init__(self, **kwargs):
        from types import SimpleNamespace

        self.kwargs, self.llm_engine, self.params, self.aborted = kwargs, self, [], []
        self.active: dict[str, list] = {}  # id -> [prompt, text, tokens so far]
        self._tokenizer = SimpleNamespace(convert_tokens_to_ids=lambda ts: [self.PLACEHOLDERS[t] for t in ts])

    def get_tokenizer(self):
        return self._tokenizer

    def add_request(self, request_id, prompt, params):
        self.params.append(params)
        self.active[request_id] = [prompt, self.scripts.pop(0), 0]

    def step(self):
        from types import SimpleNamespace

        out = []
        for rid, state in list(self.active.items()):
            state[2] += 1
            done = bool(state[1]) and state[2] >= len(state[1].split())
            out.append(SimpleNamespace(request_id=rid, finished=done, prompt_token_ids=[0] * 10, outputs=[
                SimpleNamespace(text=state[1] if done else "", finish_reason="stop", token_ids=list(range(state[2])))]))
            if done:
                del self.active[rid]
        return out

    def abort_request(self, request_ids):
        self.aborted += list(request_ids)
        for rid in request_ids:
            self.active.pop(rid, None)


@pytest.fixture
def fake_vllm(monkeypatch):
    import sys
    from types import ModuleType, SimpleNamespace

    module = ModuleType("vllm")
    module.LLM, module.SamplingParams = FakeVLLM, lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", module)
    return FakeVLLM


def test_vllm_engine_steps_requests_and_never_samples_vision_placeholders(fake_vllm):
    fake_vllm.scripts = [DRAW, ANSWER]
    engine = create_engine("vllm", "org/ckpt", temperature=0.0)
    a, b = session(), session()
    replies = engine.generate([a.request(), b.request()])
    assert [r.text for r in replies] == [DRAW, ANSWER]  # in request order, whatever finished first
    assert engine.llm.kwargs["enable_prefix_caching"] and not engine.llm.active
    assert all(p.logit_bias == {151655: -100.0, 151656: -100.0} and p.temperature == 0.0
               for p in engine.llm.params)


def test_vllm_cancel_aborts_the_requests_inside_vllm_at_once(fake_vllm):
    import threading

    fake_vllm.scripts = ["", ""]  # generations that would run forever
    engine = create_engine("vllm", "org/ckpt")
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    replies = engine.generate([session().request(), session().request()], cancel=cancel)
    assert [r.error for r in replies] == ["cancelled", "cancelled"]
    assert len(engine.llm.aborted) == 2 and not engine.llm.active  # gone from vLLM, not left running


def test_replay_follows_the_scene_among_traces_of_one_question():
    """Traces of the same question recorded on different frames: the replay engine plays the one
    whose recorded image looks like the request's (here a dark and a bright frame, resized)."""
    from ros_vilasr.core.engines.replay import ReplayEngine, thumbnail
    from ros_vilasr.core.session import Request

    dark, bright = Image.new("RGB", (640, 480), (20, 20, 20)), Image.new("RGB", (640, 480), (230, 230, 230))
    dark.paste((200, 0, 0), (0, 0, 320, 480))  # a left half, so the signature is not flat

    def trace(image, answer):
        return {"question": "Is it left?", "thumbnail": thumbnail(image),
                "conversations": [{"role": "assistant", "content": f"<answer>{answer}</answer>"}]}

    engine = ReplayEngine([trace(dark, "A"), trace(bright, "B")])

    def reply(key, image):
        request = Request(key, [], [image.resize((448, 336))], 16, question="Is it left?")
        return engine.generate([request])[0].text

    assert reply("1", bright) == "<answer>B</answer>" and reply("2", dark) == "<answer>A</answer>"
    other = ReplayEngine([{"question": "Is it left?", "conversations": [{"role": "assistant", "content": "x"}]}])
    assert other.generate([Request("3", [], [bright], 16, question="Is it left?")])[0].text == "x"

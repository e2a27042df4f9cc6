"""Every parameter of ``vilasr_node``: name, default, description, range — one table.

The table is plain Python so the launch-file test and the docs read it without starting ROS;
``declare_all`` turns it into ROS parameter declarations (descriptors with ranges). When a value
takes effect is part of each description: ``per query`` values apply to the next query, ``buffer``
values to the next frame, ``activate`` values to the next activation, ``configure`` values to the
next configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ros_vilasr.core.engines import ENGINES
from ros_vilasr.core.images import MAX_PIXELS_EVAL, MIN_PIXELS, NO_RESIZE_MAX_PIXELS
from ros_vilasr.core.models import EMBEDDED, run_profile

# The small model shipped in the package; the published ViLaSR-7B weights are "AntResearchNLP/ViLaSR".
DEFAULT_MODEL = EMBEDDED
RELIABILITIES = ("best_effort", "reliable")
MAX_PENDING_LIMIT = 16  # a queue longer than this is a client bug, not a workload
MAX_PIXELS_LIMIT = NO_RESIZE_MAX_PIXELS  # the largest image the engines take without resizing


@dataclass(frozen=True)
class Param:
    name: str
    default: bool | int | float | str | tuple[str, ...]
    description: str
    range: tuple[float, float] | None = None  # inclusive, for numbers
    choices: tuple[str, ...] = ()  # for strings
    applies: str = "per query"  # per query | buffer | activate | configure | always

    @property
    def type_name(self) -> str:
        if isinstance(self.default, tuple):
            return "string_array"
        return type(self.default).__name__  # bool | int | float | str


PARAMETERS: tuple[Param, ...] = (
    # cameras and key frames
    Param("image_topics", ("/camera/image_raw",),
          "Camera topics to subscribe to: sensor_msgs/Image, or sensor_msgs/CompressedImage for "
          "topics ending in /compressed. The topic names are the camera names used in queries.",
          applies="activate"),
    Param("image_reliability", "best_effort",
          "Reliability of the camera subscriptions (sensor-data QoS otherwise). best_effort "
          "receives from every publisher; reliable receives nothing from best-effort cameras.",
          choices=RELIABILITIES, applies="activate"),
    Param("depth_topics", ("",),
          "Aligned depth image per camera, in image_topics' order ('' = none): sensor_msgs/Image "
          "16UC1 (mm) or 32FC1 (m), or a .../compressedDepth topic. Drawings on a camera with depth "
          "are lifted to 3-D (DrawOp position, extent, length_m; ~/markers_3d).", applies="activate"),
    Param("camera_info_topics", ("",),
          "camera_info per camera, in image_topics' order ('' = next to its depth topic: "
          ".../camera_info).", applies="activate"),
    Param("target_frame", "",
          "Frame for lifted drawings (e.g. base_link, map), through tf2 where tf2_ros is importable (a ROS "
          "installation); '' or no transform at a frame's stamp: the camera's optical frame. DrawOp.frame_id "
          "names the frame used.", applies="activate"),
    Param("depth_tolerance_s", 0.05,
          "Largest stamp difference between a colour frame and the depth image paired with it.",
          range=(0.0, 1.0), applies="activate"),
    Param("keyframe_min_interval_s", 0.5,
          "Minimum time between two key frames of one camera (arrival time).",
          range=(0.0, 3600.0), applies="buffer"),
    Param("keyframe_change_threshold", 0.02,
          "Minimum visual change from the last key frame for a frame to become a key frame: mean "
          "absolute difference of small grayscale thumbnails, 0..1 of the intensity range.",
          range=(0.0, 1.0), applies="buffer"),
    Param("keyframes_per_camera", 16, "Key frames kept per camera (oldest dropped first).",
          range=(1, 1000), applies="buffer"),
    Param("keyframe_max_age_s", 60.0,
          "Frames older than this (arrival time) are dropped, the latest frame included.",
          range=(0.1, 86400.0), applies="buffer"),
    Param("buffer_memory_mb", 512.0,
          "Memory budget of all buffered frames together; never exceeded (oldest key frames "
          "across cameras are evicted first; a frame larger than the budget is dropped).",
          range=(0.1, 65536.0), applies="buffer"),
    Param("max_frame_pixels", 4096 * 4096,
          "Largest camera frame taken (width x height; a compressed frame's is read from its "
          "header before decoding). Larger frames, and frames with a side under 28 px or an aspect "
          "ratio over 200, are dropped and counted in /diagnostics.",
          range=(28 * 28, 2**31 - 1), applies="buffer"),
    # model and engine
    Param("engine", "transformers",
          "Inference back end. Read-only after configure (clean up the node to change it).",
          choices=ENGINES, applies="configure"),
    Param("model", DEFAULT_MODEL,
          "Hub id or local path of the weights (transformers, vllm), 'embedded' (the small model "
          "shipped in the package; its profile sets max_pixels, max_new_tokens and greedy while "
          "they are at their defaults), or the served model name (openai). Read-only after "
          "configure. Unused by the replay engine.",
          applies="configure"),
    Param("replay_file", "",
          "replay engine: transcript file (JSON / JSON lines with 'conversations', as "
          "'vilasr replay' reads it) whose assistant turns are played back.",
          applies="activate"),
    Param("openai_base_url", "http://localhost:8000/v1",
          "openai engine: base URL of the OpenAI-compatible server (vLLM, SGLang, llama.cpp).",
          applies="activate"),
    Param("openai_timeout_s", 120.0,
          "openai engine: seconds a request may wait for the server before the query ends with "
          "engine_error (cancel and deactivate abort a request at once, whatever this is).",
          range=(1.0, 3600.0), applies="activate"),
    Param("device", "auto", "transformers engine: torch device (auto = cuda when available, else cpu).",
          applies="activate"),
    Param("dtype", "auto",
          "transformers / vllm engines: weight dtype (auto = bfloat16 on GPU, float32 on CPU).",
          choices=("auto", "bfloat16", "float16", "float32"), applies="activate"),
    Param("quantization", "none",
          "transformers engine: weight-only quantization of the language model (int8: torchao, CPU "
          "or CUDA; int4: torchao on CUDA). Refused with the reason where the platform lacks it.",
          choices=("none", "int8", "int4"), applies="activate"),
    Param("temperature", 0.75, "Sampling temperature (ignored when greedy).", range=(0.0, 2.0),
          applies="activate"),
    Param("top_p", 0.9, "Nucleus sampling top-p (ignored when greedy).", range=(0.0, 1.0),
          applies="activate"),
    Param("greedy", False, "Greedy decoding instead of sampling (deterministic answers).",
          applies="activate"),
    Param("system_prompt_file", "",
          "Replacement system prompt file ({width} and {height} are filled in); empty = the "
          "model's own (system_prompt.txt beside its weights), else the bundled ViLaSR prompt.",
          applies="per query"),
    # per-query budgets
    Param("max_pixels", MAX_PIXELS_EVAL,
          "Pixel budget of each image after Qwen's smart resize (the model's grid).",
          range=(MIN_PIXELS, MAX_PIXELS_LIMIT)),
    Param("max_calls", 10, "Model calls per query (a goal's max_calls overrides it when > 0).",
          range=(1, 100)),
    Param("max_images", 45, "Images per dialogue, input frames and drawn images together.",
          range=(1, 1000)),
    Param("max_new_tokens", 16384, "Tokens generated per model call.", range=(1, 131072)),
    Param("max_pending", 4,
          "Queries accepted but not finished (running + queued); more are rejected with a reason.",
          range=(1, MAX_PENDING_LIMIT)),
    Param("max_concurrent", 4,
          "Queries reasoned about at once, batched in one engine call per turn; a query arriving "
          "while others run joins them at their next turn. More wait in the queue.",
          range=(1, MAX_PENDING_LIMIT)),
    Param("max_watches", 16, "Standing questions (~/watch) registered at once; more are refused with the reason.",
          range=(0, 1000), applies="always"),
    Param("max_question_chars", 4000,
          "Longest question (options included) a query may have; longer ones are rejected with "
          "the reason.", range=(1, 1_000_000)),
    # node
    Param("autostart", True, "Configure and activate on start, without a lifecycle manager.",
          applies="always"),
    Param("diagnostics_period_s", 1.0, "Period of the /diagnostics messages.", range=(0.05, 60.0),
          applies="always"),
)

BY_NAME = {p.name: p for p in PARAMETERS}
NAMES = tuple(BY_NAME)
READ_ONLY_AFTER_CONFIGURE = ("engine", "model")


def with_profile(values: dict, profile: dict | None = None) -> dict:
    """``values`` with the model's run profile (``core.models.run_profile``) applied to the budgets
    still at their defaults (launch and parameter files pass every default explicitly, so "left at
    the default" is what "not chosen" means here); the profile's greedy decoding applies while
    ``greedy`` and ``temperature`` are both at their defaults. ``profile``: the model's, if already
    read."""
    if values["engine"] not in ("transformers", "vllm"):
        return values
    profile = run_profile(values["model"]) if profile is None else profile
    chosen = {k: profile[k] for k in ("max_pixels", "max_new_tokens") if k in profile}
    if "temperature" in profile and values["temperature"] == BY_NAME["temperature"].default:
        chosen["greedy"] = profile["temperature"] == 0
    return values | {k: v for k, v in chosen.items() if values[k] == BY_NAME[k].default}


def launch_default(param: Param) -> str:
    """The parameter's default as a launch-argument string (what a launch file declares)."""
    value = param.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(f"'{v}'" for v in value) + "]"
    return str(value)


def check_value(name: str, value) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name`` (None when it is).

    ROS enforces numeric ranges from the descriptors; this covers string choices and lists."""
    param = BY_NAME.get(name)
    if param is None:
        return None
    if param.choices and value not in param.choices:
        return f"{name} must be one of {', '.join(param.choices)} (got {value!r})"
    if name == "system_prompt_file" and value and not Path(value).is_file():
        return f"system_prompt_file {value!r} is not a file"
    if name == "image_topics":
        topics = list(value)
        if not topics or any(not t.strip() for t in topics):
            return "image_topics needs at least one non-empty topic name"
        if len(set(topics)) != len(topics):
            return "image_topics lists a topic twice"
    return None


def declare_all(node) -> None:
    """Declare every parameter on ``node`` with its description and range."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
    from rclpy.parameter import Parameter

    # "-p buffer_memory_mb:=1" or "512" in YAML arrive as integers, which rclpy refuses for a
    # double parameter (the node would die at start); read them as the floats they mean.
    overrides = getattr(node, "_parameter_overrides", {})
    for p in PARAMETERS:
        given = overrides.get(p.name)
        if p.type_name == "float" and given is not None and given.type_ == Parameter.Type.INTEGER:
            overrides[p.name] = Parameter(p.name, Parameter.Type.DOUBLE, float(given.value))

    types = {"bool": ParameterType.PARAMETER_BOOL, "int": ParameterType.PARAMETER_INTEGER,
             "float": ParameterType.PARAMETER_DOUBLE, "str": ParameterType.PARAMETER_STRING,
             "string_array": ParameterType.PARAMETER_STRING_ARRAY}
    for p in PARAMETERS:
        description = p.description + f" Applies: {p.applies}."
        if p.choices:
            description += f" One of: {', '.join(p.choices)}."
        descriptor = ParameterDescriptor(name=p.name, type=types[p.type_name], description=description)
        if p.range is not None and p.type_name == "int":
            descriptor.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]))]
        elif p.range is not None:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]),
                                                                  to_value=float(p.range[1]))]
        default = list(p.default) if isinstance(p.default, tuple) else p.default
        node.declare_parameter(p.name, default, descriptor)

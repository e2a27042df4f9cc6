"""Launch vilasr_node: one launch argument per node parameter, plus ``namespace``.

    ros2 launch ros_vilasr vilasr.launch.py image_topics:="['/front/image_raw', '/side/image_raw/compressed']"
    ros2 launch ros_vilasr vilasr.launch.py engine:=replay replay_file:=/path/transcript.json

Defaults mirror ros_vilasr/node/params.py (tests/test_launch_static.py keeps them in step).
The node configures and activates itself while ``autostart`` is true; set it to false to drive
the lifecycle from a manager instead.
"""

from typing import List  # noqa: UP035 - launch's type coercion recognises typing.List only

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

# (name, default, type, description)
PARAMETERS = [
    ("image_topics", "['/camera/image_raw']", List[str],  # noqa: UP006
     "Camera topics (sensor_msgs/Image; CompressedImage for topics ending in /compressed)"),
    ("image_reliability", "best_effort", str, "Camera subscription reliability: best_effort | reliable"),
    ("depth_topics", "['']", List[str],  # noqa: UP006
     "Aligned depth topic per camera, in image_topics' order ('' = none)"),
    ("camera_info_topics", "['']", List[str],  # noqa: UP006
     "camera_info per camera ('' = next to its depth topic)"),
    ("depth_tolerance_s", "0.05", float, "Largest colour / depth stamp difference when pairing"),
    ("target_frame", "", str, "Frame for lifted drawings via tf2 ('' = the cameras' optical frames)"),
    ("keyframe_min_interval_s", "0.5", float, "Minimum time between two key frames of a camera"),
    ("keyframe_change_threshold", "0.02", float, "Minimum visual change (0..1) for a new key frame"),
    ("keyframes_per_camera", "16", int, "Key frames kept per camera"),
    ("keyframe_max_age_s", "60.0", float, "Frames older than this are dropped"),
    ("buffer_memory_mb", "512.0", float, "Memory budget of all buffered frames (never exceeded)"),
    ("max_frame_pixels", "16777216", int, "Largest camera frame taken (width x height)"),
    ("engine", "transformers", str, "transformers | vllm | openai | replay"),
    ("model", "embedded", str, "embedded (shipped), a hub id / local path, or the served model name (openai)"),
    ("replay_file", "", str, "replay engine: transcript file to play back"),
    ("openai_base_url", "http://localhost:8000/v1", str, "openai engine: server base URL"),
    ("openai_timeout_s", "120.0", float, "openai engine: seconds a request may wait for the server"),
    ("device", "auto", str, "transformers engine: torch device"),
    ("dtype", "auto", str, "auto | bfloat16 | float16 | float32"),
    ("quantization", "none", str, "transformers engine: none | int8 | int4 (weight-only)"),
    ("temperature", "0.75", float, "Sampling temperature"),
    ("top_p", "0.9", float, "Nucleus sampling top-p"),
    ("greedy", "false", bool, "Greedy decoding instead of sampling"),
    ("system_prompt_file", "", str, "Replacement system prompt file (empty = the model's, else the bundled one)"),
    ("max_pixels", "351232", int, "Pixel budget per image after smart resize"),
    ("max_calls", "10", int, "Model calls per query"),
    ("max_images", "45", int, "Images per dialogue (inputs + drawings)"),
    ("max_new_tokens", "16384", int, "Tokens generated per model call"),
    ("max_pending", "4", int, "Queries running + queued before new ones are rejected"),
    ("max_concurrent", "4", int, "Queries reasoned about at once (batched)"),
    ("max_watches", "16", int, "Standing questions (~/watch) at once"),
    ("max_question_chars", "4000", int, "Longest question (options included) a query may have"),
    ("autostart", "true", bool, "Configure and activate on start"),
    ("diagnostics_period_s", "1.0", float, "Period of /diagnostics"),
]


def generate_launch_description() -> LaunchDescription:
    arguments = [DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node")]
    arguments += [DeclareLaunchArgument(name, default_value=default, description=description)
                  for name, default, _, description in PARAMETERS]
    node = LifecycleNode(
        package="ros_vilasr",
        executable="vilasr_node",
        name="vilasr_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[{name: ParameterValue(LaunchConfiguration(name), value_type=value_type)
                     for name, _, value_type, _ in PARAMETERS}],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, node])

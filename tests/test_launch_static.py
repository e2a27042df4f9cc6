"""The launch file and configs stay in step with the node's parameters — checked without ROS.

``launch`` / ``launch_ros`` are not installable from PyPI, so the launch file is (1) parsed with
``ast`` and (2) run against tiny stand-ins of the launch classes that only record their
arguments; the node's parameter list comes from ros_vilasr.node.params (no ROS started).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import types
import typing
from pathlib import Path

import pytest
import yaml

from ros_vilasr.node import params

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "vilasr.launch.py"
TYPES = {"string_array": "List[str]", "str": "str", "int": "int", "float": "float", "bool": "bool"}


def _table(tree: ast.Module) -> dict[str, tuple[str, str]]:
    """The launch file's PARAMETERS literal: name -> (default string, type source)."""
    node = next(n for n in tree.body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "PARAMETERS" for t in n.targets))
    table = {}
    for item in node.value.elts:
        name, default, value_type, description = item.elts
        assert isinstance(description, ast.Constant) and description.value.strip()
        table[name.value] = (default.value, ast.unparse(value_type))
    return table


def _declared(tree: ast.Module) -> set[str]:
    """Names given to DeclareLaunchArgument, literally or by a comprehension over PARAMETERS."""
    names = set()
    table = _table(tree)
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "DeclareLaunchArgument":
            first = call.args[0]
            if isinstance(first, ast.Constant):
                names.add(first.value)
    for comp in ast.walk(tree):
        if isinstance(comp, ast.ListComp) and isinstance(comp.elt, ast.Call) \
                and getattr(comp.elt.func, "id", "") == "DeclareLaunchArgument":
            (gen,) = comp.generators
            assert isinstance(gen.iter, ast.Name) and gen.iter.id == "PARAMETERS"
            assert ast.unparse(comp.elt.args[0]) == ast.unparse(gen.target.elts[0])  # the name itself
            names |= set(table)
    return names


def test_launch_file_declares_every_node_parameter_and_namespace():
    tree = ast.parse(LAUNCH.read_text())
    declared = _declared(tree)
    missing = set(params.NAMES) - declared
    assert not missing, f"launch file lacks arguments for {sorted(missing)}"
    assert "namespace" in declared
    assert declared - {"namespace"} == set(params.NAMES), "launch file declares unknown parameters"


def test_launch_defaults_and_types_match_the_node():
    table = _table(ast.parse(LAUNCH.read_text()))
    for p in params.PARAMETERS:
        default, value_type = table[p.name]
        assert default == params.launch_default(p), p.name
        assert value_type == TYPES[p.type_name], p.name


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def launch_stubs(monkeypatch):
    """Stand-ins for launch / launch_ros that record how they are called."""
    modules = {
        "launch": {"LaunchDescription": _Recorder},
        "launch.actions": {"DeclareLaunchArgument": _Recorder},
        "launch.substitutions": {"LaunchConfiguration": _Recorder},
        "launch_ros": {},
        "launch_ros.actions": {"LifecycleNode": _Recorder, "Node": _Recorder},
        "launch_ros.parameter_descriptions": {"ParameterValue": _Recorder},
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)


def test_launch_file_wires_every_argument_into_the_node(launch_stubs):
    spec = importlib.util.spec_from_file_location("vilasr_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    (entities,) = description.args
    arguments = {e.args[0]: e.kwargs["default_value"] for e in entities if not e.kwargs.get("package")}
    node = next(e for e in entities if e.kwargs.get("package") == "ros_vilasr")
    assert node.kwargs["executable"] == "vilasr_node" and node.kwargs["name"] == "vilasr_node"
    assert node.kwargs["namespace"].args == ("namespace",)
    (overrides,) = node.kwargs["parameters"]
    assert set(overrides) == set(params.NAMES) == set(arguments) - {"namespace"}
    for name, value in overrides.items():
        assert value.args[0].args == (name,)  # ParameterValue(LaunchConfiguration(name), ...)
        kind = params.BY_NAME[name].type_name
        expected = typing.List[str] if kind == "string_array" else {"str": str, "int": int, "float": float,  # noqa: UP006
                                                                    "bool": bool}[kind]
        assert value.kwargs["value_type"] == expected


def test_config_yaml_sets_every_parameter_to_its_default():
    data = yaml.safe_load((REPO / "config" / "vilasr.yaml").read_text())
    values = data["/**"]["ros__parameters"]
    assert set(values) == set(params.NAMES)
    for p in params.PARAMETERS:
        default = list(p.default) if isinstance(p.default, tuple) else p.default
        assert values[p.name] == default and type(values[p.name]) is type(default), p.name


def test_visualisation_configs_show_cameras_drawings_and_answers():
    rviz = yaml.safe_load((REPO / "config" / "vilasr.rviz").read_text())
    topics = [d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]]
    assert {"/camera/image_raw", "/vilasr_node/annotated", "/vilasr_node/markers_3d"} <= set(topics)
    layout = json.loads((REPO / "config" / "foxglove_layout.json").read_text())
    panels = layout["configById"]
    images = [c["imageMode"]["imageTopic"] for k, c in panels.items() if k.startswith("Image!")]
    assert {"/camera/image_raw", "/vilasr_node/annotated"} <= set(images)
    assert any(c.get("topicPath", "").startswith("/vilasr_node/answer") for c in panels.values())
    assert any("/vilasr_node/markers" in c.get("imageMode", {}).get("annotations", {}) for c in panels.values())
    assert panels["3D!drawings"]["topics"]["/vilasr_node/markers_3d"]["visible"]
    placed = json.dumps(layout["layout"])
    assert all(panel in placed for panel in panels)


def test_the_jetson_profile_sets_declared_parameters_to_valid_values():
    data = yaml.safe_load((REPO / "config" / "jetson_orin.yaml").read_text())
    values = data["/**"]["ros__parameters"]
    assert values["engine"] == "openai" and values["max_pixels"] == 200704
    for name, value in values.items():
        param = params.BY_NAME[name]  # every key is a declared parameter
        default = list(param.default) if isinstance(param.default, tuple) else param.default
        assert type(value) is type(default), name
        assert params.check_value(name, value) is None, name
        if param.range is not None:
            assert param.range[0] <= value <= param.range[1], name

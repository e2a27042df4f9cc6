"""Synthetic scenes with exact ground truth: camera recordings and spatial questions without a camera.

See ``scene`` for the renderer and the ground-truth helpers.
"""

from .scene import (
    Camera,
    Rendering,
    Room,
    Scene,
    SceneObject,
    bearing_deg,
    center_distance,
    closest_object,
    object_distance,
    object_size,
    on_floor,
    random_scene,
    relative_direction,
    render,
    render_layers,
    room_area,
    side_in_view,
)

__all__ = [
    "Camera", "Rendering", "Room", "Scene", "SceneObject", "bearing_deg", "center_distance",
    "closest_object", "object_distance", "object_size", "on_floor", "random_scene",
    "relative_direction", "render", "render_layers", "room_area", "side_in_view",
]

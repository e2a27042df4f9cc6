"""A tiny deterministic 3-D scene renderer (numpy + PIL) with exact ground truth.

World frame (REP-103 style): x and y span the floor, z points up, metres. A ``Room`` is the box
[0, sx] x [0, sy] x [0, height]; objects are axis-aligned coloured boxes inside it. A ``Camera`` is
a pinhole at ``position`` looking along ``yaw`` (degrees, counter-clockwise from +x) tilted down by
``pitch`` (degrees, positive = looking down, as a positive REP-103 pitch), with a horizontal field
of view ``fov_deg``.

``render(scene, camera)`` rasterises every visible face (back faces culled, faces clipped at the
near plane, drawn in painter's order far to near, with a per-pixel depth test so interpenetrating or
stacked boxes still occlude correctly) and returns the image plus each object's 2-D box: the
tight box around its *visible* pixels, ``None`` when it is hidden or out of view. Shading is
Lambertian with one fixed light, so the faces of a box differ in brightness and neighbouring
objects stay distinguishable. Same inputs, same pixels: nothing random happens here.

Ground-truth helpers (for synthetic VSI-Bench / SPAR-style questions): ``object_distance``,
``center_distance``, ``object_size``, ``on_floor``, ``closest_object``, ``relative_direction``,
``side_in_view``, ``room_area``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw

Vec3 = tuple[float, float, float]
Color = tuple[int, int, int]
BBox = tuple[int, int, int, int]

NEAR_PLANE = 0.02  # metres; geometry closer than this to the camera is clipped away
MIN_VISIBLE_PIXELS = 12  # fewer visible pixels than this and an object counts as not visible
FLOOR_TOLERANCE = 0.01  # metres between an object's bottom and the floor to count as "on the floor"
LIGHT_DIRECTION = np.array([-0.35, -0.55, 1.0]) / np.linalg.norm([-0.35, -0.55, 1.0])
AMBIENT = 0.5  # share of a face's colour lit regardless of its orientation
BACKGROUND = (0, 0, 0)  # only visible when a camera looks out of the room


@dataclass(frozen=True)
class SceneObject:
    """An axis-aligned box. ``position``: its centre; ``size``: full extents along x, y, z."""

    name: str
    color: Color
    position: Vec3
    size: Vec3

    @property
    def min_corner(self) -> np.ndarray:
        return np.asarray(self.position, float) - np.asarray(self.size, float) / 2

    @property
    def max_corner(self) -> np.ndarray:
        return np.asarray(self.position, float) + np.asarray(self.size, float) / 2

    @property
    def bottom(self) -> float:
        return float(self.min_corner[2])

    @property
    def top(self) -> float:
        return float(self.max_corner[2])


@dataclass(frozen=True)
class Room:
    """The room [0, sx] x [0, sy] x [0, height] in metres; walls in the order y=0, x=sx, y=sy, x=0."""

    size: Vec3 = (6.0, 5.0, 2.8)
    floor_color: Color = (176, 164, 146)
    floor_tile: float = 0.5  # metres; a subtle checker gives the floor depth cues (0 = plain)
    wall_colors: tuple[Color, Color, Color, Color] = (
        (214, 210, 200), (200, 206, 214), (222, 216, 204), (206, 214, 204))
    ceiling_color: Color = (236, 236, 232)


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    room: Room = field(default_factory=Room)

    def __post_init__(self):
        names = [o.name for o in self.objects]
        if len(set(names)) != len(names):
            raise ValueError(f"object names must be unique: {names}")

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objects]

    def object(self, name: str) -> SceneObject:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(f"no object named {name!r} (have {', '.join(self.names)})")

    def to_dict(self) -> dict:
        return {"room": asdict(self.room), "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        room = data.get("room", {})
        room = Room(**{k: tuple(map(tuple, v)) if k == "wall_colors" else
                       (tuple(v) if isinstance(v, list) else v) for k, v in room.items()})
        objects = tuple(SceneObject(o["name"], tuple(o["color"]), tuple(o["position"]), tuple(o["size"]))
                        for o in data["objects"])
        return cls(objects, room)


@dataclass(frozen=True)
class Camera:
    """Pinhole camera; yaw / pitch in degrees (see module docstring), horizontal ``fov_deg``."""

    position: Vec3
    yaw: float
    pitch: float = 0.0
    fov_deg: float = 70.0
    width: int = 640
    height: int = 480

    @property
    def focal(self) -> float:
        """Focal length in pixels (square pixels)."""
        return (self.width / 2) / math.tan(math.radians(self.fov_deg) / 2)

    @property
    def rotation(self) -> np.ndarray:
        """Rows are the camera's x (right), y (down), z (forward) axes in world coordinates."""
        yaw, pitch = math.radians(self.yaw), math.radians(self.pitch)
        forward = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), -math.sin(pitch)])
        right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
        down = np.cross(forward, right)
        return np.stack([right, down, forward])

    def to_camera(self, points) -> np.ndarray:
        """World points (N, 3) -> camera coordinates (N, 3): x right, y down, z forward."""
        return (np.asarray(points, float).reshape(-1, 3) - np.asarray(self.position, float)) @ self.rotation.T

    def project(self, points) -> np.ndarray:
        """World points (N, 3) -> (N, 3) of pixel u, v and depth z (u, v meaningless when z <= 0)."""
        c = self.to_camera(points)
        z = c[:, 2]
        safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
        f = self.focal
        return np.stack([f * c[:, 0] / safe + self.width / 2, f * c[:, 1] / safe + self.height / 2, z], axis=1)

    @classmethod
    def looking_at(cls, position: Vec3, target: Vec3, **kwargs) -> Camera:
        """A camera at ``position`` aimed at ``target`` (yaw and pitch computed)."""
        d = np.asarray(target, float) - np.asarray(position, float)
        yaw = math.degrees(math.atan2(d[1], d[0]))
        pitch = math.degrees(math.atan2(-d[2], math.hypot(d[0], d[1])))
        return cls(tuple(position), yaw, pitch, **kwargs)


@dataclass
class Rendering:
    """Everything a render produces: the image and per-pixel layers for ground truth."""

    image: Image.Image
    depth: np.ndarray  # (H, W) float, metres along the optical axis; inf where nothing was drawn
    object_ids: np.ndarray  # (H, W) int, index into scene.objects; -1 for room surfaces
    boxes: dict[str, BBox | None]  # visible-pixel box (x1, y1, x2, y2), x2/y2 exclusive


# -- rendering --------------------------------------------------------------------------------------

def _box_faces(lo: np.ndarray, hi: np.ndarray, outward: bool = True):
    """The 6 faces of a box as (4 corners, unit normal); normals point out (or in for a room)."""
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    faces = [
        ([(x0, y0, z0), (x1, y0, z0), (x1, y1, z0), (x0, y1, z0)], (0, 0, -1)),  # bottom
        ([(x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)], (0, 0, 1)),  # top
        ([(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)], (0, -1, 0)),  # y = lo
        ([(x1, y0, z0), (x1, y1, z0), (x1, y1, z1), (x1, y0, z1)], (1, 0, 0)),  # x = hi
        ([(x0, y1, z0), (x1, y1, z0), (x1, y1, z1), (x0, y1, z1)], (0, 1, 0)),  # y = hi
        ([(x0, y0, z0), (x0, y1, z0), (x0, y1, z1), (x0, y0, z1)], (-1, 0, 0)),  # x = lo
    ]
    sign = 1.0 if outward else -1.0
    return [(np.array(c, float), sign * np.array(n, float)) for c, n in faces]


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-space polygon against z >= NEAR_PLANE."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        a_in, b_in = a[2] >= NEAR_PLANE, b[2] >= NEAR_PLANE
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (NEAR_PLANE - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out)


def _shade(color: Color, normal: np.ndarray) -> np.ndarray:
    light = AMBIENT + (1 - AMBIENT) * max(0.0, float(normal @ LIGHT_DIRECTION))
    return np.clip(np.asarray(color, float) * light, 0, 255)


@dataclass
class _Face:
    corners: np.ndarray  # world (4, 3)
    normal: np.ndarray  # world unit normal, facing the viewer side
    color: Color
    object_id: int  # -1 for the room
    floor: bool = False


def _scene_faces(scene: Scene) -> list[_Face]:
    room = scene.room
    faces = []
    # Room surfaces face inwards; walls in the order y=0, x=sx, y=sy, x=0 (Room.wall_colors).
    room_faces = _box_faces(np.zeros(3), np.asarray(room.size, float), outward=False)
    colors = [room.floor_color, room.ceiling_color, *room.wall_colors]
    for (corners, normal), color, is_floor in zip(room_faces, colors, [True] + [False] * 5):
        faces.append(_Face(corners, normal, color, -1, is_floor))
    for i, obj in enumerate(scene.objects):
        for corners, normal in _box_faces(obj.min_corner, obj.max_corner):
            faces.append(_Face(corners, normal, obj.color, i))
    return faces


def _floor_checker(camera: Camera, us: np.ndarray, vs: np.ndarray, tile: float) -> np.ndarray:
    """True where the floor point seen through pixel (u, v) lies on an odd tile."""
    f = camera.focal
    rays = np.stack([(us - camera.width / 2) / f, (vs - camera.height / 2) / f, np.ones_like(us)], -1)
    world_dirs = rays @ camera.rotation  # camera -> world directions
    t = -camera.position[2] / np.where(np.abs(world_dirs[..., 2]) < 1e-9, -1e-9, world_dirs[..., 2])
    x = camera.position[0] + t * world_dirs[..., 0]
    y = camera.position[1] + t * world_dirs[..., 1]
    return (np.floor(x / tile) + np.floor(y / tile)).astype(np.int64) % 2 == 1


def render_layers(scene: Scene, camera: Camera, min_visible_pixels: int = MIN_VISIBLE_PIXELS) -> Rendering:
    """Render ``scene`` through ``camera``; see ``Rendering`` for what comes back."""
    w, h, f = camera.width, camera.height, camera.focal
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:] = BACKGROUND
    depth = np.full((h, w), np.inf)
    ids = np.full((h, w), -1, np.int32)
    cam_pos = np.asarray(camera.position, float)
    rot = camera.rotation

    drawable = []
    for face in _scene_faces(scene):
        if (cam_pos - face.corners[0]) @ face.normal <= 0:
            continue  # back face
        cam_poly = _clip_near(camera.to_camera(face.corners))
        if len(cam_poly) < 3:
            continue
        drawable.append((float(np.max(cam_poly[:, 2])), face, cam_poly))
    # Painter's order (far first); the depth test below settles what the order cannot.
    drawable.sort(key=lambda item: -item[0])

    for _, face, cam_poly in drawable:
        uv = np.stack([f * cam_poly[:, 0] / cam_poly[:, 2] + w / 2, f * cam_poly[:, 1] / cam_poly[:, 2] + h / 2], 1)
        x0, y0 = np.floor(uv.min(0)).astype(int)
        x1, y1 = np.ceil(uv.max(0)).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
        if x0 > x1 or y0 > y1:
            continue
        mask_img = Image.new("L", (x1 - x0 + 1, y1 - y0 + 1), 0)
        ImageDraw.Draw(mask_img).polygon([(float(u - x0), float(v - y0)) for u, v in uv], fill=1)
        mask = np.asarray(mask_img, bool)
        if not mask.any():
            continue
        # Exact depth through each pixel centre from the face's plane n . X = d (camera frame).
        n_cam = rot @ face.normal
        d = float(n_cam @ cam_poly[0])
        us, vs = np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5)
        denom = n_cam[0] * (us - w / 2) / f + n_cam[1] * (vs - h / 2) / f + n_cam[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = d / denom
        z = np.where(np.isfinite(z) & (z > 0), z, np.inf)
        region = depth[y0:y1 + 1, x0:x1 + 1]
        win = mask & (z < region)
        if not win.any():
            continue
        region[win] = z[win]
        ids[y0:y1 + 1, x0:x1 + 1][win] = face.object_id
        color = _shade(face.color, face.normal)
        patch = rgb[y0:y1 + 1, x0:x1 + 1]
        if face.floor and scene.room.floor_tile > 0:
            odd = _floor_checker(camera, us, vs, scene.room.floor_tile)
            patch[win & ~odd] = color.astype(np.uint8)
            patch[win & odd] = (color * 0.93).astype(np.uint8)
        else:
            patch[win] = color.astype(np.uint8)

    boxes: dict[str, BBox | None] = {}
    for i, obj in enumerate(scene.objects):
        rows, cols = np.nonzero(ids == i)
        if len(rows) < min_visible_pixels:
            boxes[obj.name] = None
        else:
            boxes[obj.name] = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    return Rendering(Image.fromarray(rgb, "RGB"), depth, ids, boxes)


def render(scene: Scene, camera: Camera) -> tuple[Image.Image, dict[str, BBox | None]]:
    """The RGB image and, per object name, its visible 2-D box (x1, y1, x2, y2) or None."""
    result = render_layers(scene, camera)
    return result.image, result.boxes


# -- ground truth -----------------------------------------------------------------------------------

def center_distance(a: SceneObject, b: SceneObject) -> float:
    """Euclidean distance between box centres, metres."""
    return float(np.linalg.norm(np.asarray(a.position, float) - np.asarray(b.position, float)))


def object_distance(a: SceneObject, b: SceneObject) -> float:
    """Distance between the closest points of two boxes (0 when they touch), metres — the
    measure VSI-Bench's absolute-distance questions use."""
    gap = np.maximum(0.0, np.maximum(a.min_corner - b.max_corner, b.min_corner - a.max_corner))
    return float(np.linalg.norm(gap))


def object_size(obj: SceneObject) -> float:
    """Length of the longest dimension, metres (VSI-Bench object size)."""
    return float(max(obj.size))


def on_floor(obj: SceneObject, tolerance: float = FLOOR_TOLERANCE) -> bool:
    return abs(obj.bottom) <= tolerance


def room_area(room: Room) -> float:
    """Floor area in square metres (VSI-Bench room size)."""
    return float(room.size[0] * room.size[1])


def closest_object(scene: Scene, name: str, candidates: list[str] | None = None,
                   measure=object_distance) -> str:
    """The candidate (default: every other object) nearest to ``name`` under ``measure``."""
    ref = scene.object(name)
    pool = [scene.object(c) for c in (candidates or scene.names) if c != name]
    return min(pool, key=lambda o: measure(ref, o)).name


def bearing_deg(viewpoint: Vec3, facing: Vec3, target: Vec3) -> float:
    """Angle of ``target`` seen from ``viewpoint`` while facing ``facing``, in degrees on the
    floor plane: 0 = straight ahead, positive = to the left, negative = to the right, (-180, 180]."""
    fx, fy = facing[0] - viewpoint[0], facing[1] - viewpoint[1]
    tx, ty = target[0] - viewpoint[0], target[1] - viewpoint[1]
    angle = math.degrees(math.atan2(fx * ty - fy * tx, fx * tx + fy * ty))
    return 180.0 if angle == -180.0 else angle


def relative_direction(viewpoint: Vec3, facing: Vec3, target: Vec3, granularity: str = "lr") -> str:
    """Where ``target`` lies for someone at ``viewpoint`` facing ``facing`` (VSI-Bench style).

    granularity "lr": left | right; "lrb": left | right | back (back = behind, beyond 90 degrees);
    "quadrant": front-left | front-right | back-left | back-right."""
    angle = bearing_deg(viewpoint, facing, target)
    side = "left" if angle > 0 else "right"
    if granularity == "lr":
        return side
    if granularity == "lrb":
        return "back" if abs(angle) > 90 else side
    if granularity == "quadrant":
        return f"{'back' if abs(angle) > 90 else 'front'}-{side}"
    raise ValueError(f"unknown granularity {granularity!r}")


def side_in_view(camera: Camera, reference: SceneObject, target: SceneObject) -> str:
    """"left" or "right": which side of ``reference`` ``target`` appears on in ``camera``'s image
    (compares the centres' horizontal image coordinates)."""
    u = camera.project([reference.position, target.position])[:, 0]
    return "left" if u[1] < u[0] else "right"


# -- random scenes ----------------------------------------------------------------------------------

CATALOG: tuple[tuple[str, Color, Vec3], ...] = (
    # name, colour, typical size (x, y, z) metres
    ("table", (139, 90, 43), (1.4, 0.8, 0.75)),
    ("chair", (40, 80, 200), (0.5, 0.5, 0.9)),
    ("lamp", (230, 200, 60), (0.3, 0.3, 1.6)),
    ("sofa", (120, 40, 120), (1.9, 0.9, 0.8)),
    ("bed", (200, 120, 140), (2.0, 1.5, 0.5)),
    ("cabinet", (110, 70, 40), (0.9, 0.5, 1.8)),
    ("crate", (60, 160, 70), (0.5, 0.5, 0.5)),
    ("fridge", (225, 225, 230), (0.7, 0.7, 1.8)),
    ("plant", (30, 120, 40), (0.4, 0.4, 1.0)),
    ("tv", (30, 30, 35), (1.2, 0.1, 0.7)),
    ("trash can", (90, 90, 90), (0.35, 0.35, 0.6)),
    ("box", (200, 150, 90), (0.6, 0.4, 0.4)),
)


def random_scene(rng: np.random.Generator | int, n_objects: int, room: Room | None = None,
                 max_tries: int = 200) -> Scene:
    """``n_objects`` distinct catalogue objects standing on the floor without overlapping (10 cm
    apart at least), sizes jittered +-20%. Same generator state (or seed), same scene."""
    rng = np.random.default_rng(rng)
    room = room or Room()
    if not 0 < n_objects <= len(CATALOG):
        raise ValueError(f"n_objects must be in 1..{len(CATALOG)}")
    picks = rng.choice(len(CATALOG), n_objects, replace=False)
    placed: list[SceneObject] = []
    for k in picks:
        name, color, base = CATALOG[int(k)]
        for _ in range(max_tries):
            size = tuple(float(round(s * rng.uniform(0.8, 1.2), 3)) for s in base)
            obj = floor_spot(rng, name, color, size, room)
            if clear_of(obj, placed):
                placed.append(obj)
                break
        else:
            raise RuntimeError(f"could not place {name!r} without overlap in {max_tries} tries")
    return Scene(tuple(placed), room)


def floor_spot(rng: np.random.Generator, name: str, color: Color, size: Vec3, room: Room) -> SceneObject:
    """``name`` standing at a random spot of ``room``'s floor, 10 cm clear of the walls."""
    x = rng.uniform(size[0] / 2 + 0.1, room.size[0] - size[0] / 2 - 0.1)
    y = rng.uniform(size[1] / 2 + 0.1, room.size[1] - size[1] / 2 - 0.1)
    return SceneObject(name, color, (round(float(x), 3), round(float(y), 3), size[2] / 2), size)


def clear_of(obj: SceneObject, others, gap: float = 0.1) -> bool:
    """At least ``gap`` metres from every one of ``others`` (furniture does not overlap)."""
    return all(object_distance(obj, other) >= gap for other in others)

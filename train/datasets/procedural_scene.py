"""A tiny ray caster for procedural RGB-D: textured rooms (or open ground), boxes and spheres, exact depth.

``render(height, width, index, seed)`` is a pure function of its arguments. The camera looks along +z, so the
hit parameter of a ray with camera-frame direction ``(x, y, 1)`` is exactly the planar depth. Ray directions are
kept as ``[3,N]`` (one contiguous row per axis, which numpy reduces fastest). Shape letters: N = H*W rays,
M = rays that hit one object.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-4
MAX_OUTDOOR_DEPTH = 60.0  # open-ground rays beyond this count as sky (invalid)


def _rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=np.float32)


def _rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=np.float32)


class Plane:
    """The plane ``p[axis] = value`` seen from the side its ``normal`` points to."""

    def __init__(self, axis: int, value: float, sign: float):
        self.axis, self.value = axis, value
        self.normal = np.zeros(3, dtype=np.float32)
        self.normal[axis] = sign

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.value - origin[self.axis]) / dirs[self.axis]  # [N]
        return np.where(t > EPS, t, np.inf)

    def surface(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uv = np.delete(points, self.axis, axis=1)  # [M,2]
        return np.broadcast_to(self.normal, points.shape), uv


class Box:
    """A box with half sizes ``half`` at ``centre``, turned by ``yaw`` about the vertical axis."""

    def __init__(self, centre, half, yaw: float):
        self.centre = np.asarray(centre, dtype=np.float32)
        self.half = np.asarray(half, dtype=np.float32)
        self.to_local, self.to_world = _rot_y(-yaw), _rot_y(yaw)

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        local_o = self.to_local @ (origin - self.centre)  # [3]
        local_d = self.to_local @ dirs  # [3,N]
        near = np.full(local_d.shape[1], -np.inf, dtype=np.float32)  # [N]
        far = np.full(local_d.shape[1], np.inf, dtype=np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis in range(3):
                inv = 1.0 / local_d[axis]  # [N]
                t1 = (-self.half[axis] - local_o[axis]) * inv
                t2 = (self.half[axis] - local_o[axis]) * inv
                near = np.maximum(near, np.minimum(t1, t2))
                far = np.minimum(far, np.maximum(t1, t2))
        return np.where((far >= near) & (near > EPS), near, np.inf)

    def surface(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        local = (points - self.centre) @ self.to_local.T  # [M,3]
        axis = np.abs(local / self.half).argmax(axis=1)  # [M]
        normal = np.zeros_like(local)
        rows = np.arange(len(local))
        normal[rows, axis] = np.sign(local[rows, axis])
        uv = np.where((axis == 0)[:, None], local[:, 1:], np.where((axis == 1)[:, None], local[:, ::2], local[:, :2]))
        return normal @ self.to_world.T, uv


class Sphere:
    def __init__(self, centre, radius: float):
        self.centre = np.asarray(centre, dtype=np.float32)
        self.radius = float(radius)

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        oc = origin - self.centre  # [3]
        a = dirs[0] * dirs[0] + dirs[1] * dirs[1] + dirs[2] * dirs[2]  # [N]
        b = oc @ dirs  # [N]
        c = float(oc @ oc) - self.radius ** 2
        disc = b * b - a * c
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / a
        return np.where((disc >= 0) & (t > EPS), t, np.inf)

    def surface(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        normal = (points - self.centre) / self.radius  # [M,3]
        uv = np.stack([np.arctan2(normal[:, 2], normal[:, 0]), np.arcsin(np.clip(normal[:, 1], -1, 1))], axis=1)
        return normal, uv * self.radius


def random_texture(rng: np.random.Generator) -> dict:
    """Pattern kind, two colours, scale, angle and a small value-noise grid."""
    base = rng.uniform(0.15, 0.95, size=3)
    other = np.clip(base * rng.uniform(0.3, 1.3) + rng.normal(0, 0.15, size=3), 0.02, 1.0)
    return {"kind": int(rng.integers(0, 4)), "colours": np.stack([base, other]).astype(np.float32),
            "scale": float(rng.uniform(1.0, 6.0)), "angle": float(rng.uniform(0, math.pi)),
            "grid": rng.random((8, 8)).astype(np.float32)}


def shade_texture(tex: dict, uv: np.ndarray) -> np.ndarray:
    """Albedo ``[M,3]`` of texture ``tex`` at surface coordinates ``uv`` ``[M,2]`` (metres)."""
    u, v = uv[:, 0] * tex["scale"], uv[:, 1] * tex["scale"]
    if tex["kind"] == 0:  # checker
        mix = (np.floor(u) + np.floor(v)) % 2
    elif tex["kind"] == 1:  # stripes
        mix = np.floor(u * math.cos(tex["angle"]) + v * math.sin(tex["angle"])) % 2
    elif tex["kind"] == 2:  # smooth value noise, tiled
        grid = tex["grid"]
        x0, y0 = np.floor(u), np.floor(v)
        fx, fy = u - x0, v - y0
        i0, j0 = x0.astype(np.int64) % 8, y0.astype(np.int64) % 8
        i1, j1 = (i0 + 1) % 8, (j0 + 1) % 8
        mix = ((grid[j0, i0] * (1 - fx) + grid[j0, i1] * fx) * (1 - fy)
               + (grid[j1, i0] * (1 - fx) + grid[j1, i1] * fx) * fy)
    else:  # plain
        mix = np.zeros_like(u)
    c0, c1 = tex["colours"]
    return c0 * (1 - mix[:, None]) + c1 * mix[:, None]  # [M,3]


def _room(rng: np.random.Generator) -> tuple[list, float]:
    """Walls/floor/ceiling and the box (x_min, x_max, z_max) objects may stand in; open ground 30% of the time."""
    if rng.random() < 0.3:
        return [Plane(1, 0.0, 1.0)], (-6.0, 6.0, 30.0)
    left, right, back = -rng.uniform(1.5, 5.0), rng.uniform(1.5, 5.0), rng.uniform(5.0, 15.0)
    planes = [Plane(1, 0.0, 1.0), Plane(0, left, 1.0), Plane(0, right, -1.0), Plane(2, back, -1.0)]
    if rng.random() < 0.7:
        planes.append(Plane(1, rng.uniform(2.5, 4.0), -1.0))
    return planes, (left + 0.5, right - 0.5, back - 1.0)


def _objects(rng: np.random.Generator, bounds: tuple[float, float, float]) -> list:
    x_min, x_max, z_max = bounds
    objects = []
    for _ in range(int(rng.integers(1, 6))):
        half = rng.uniform(0.15, 0.9, size=3)
        lift = 0.0 if rng.random() < 0.8 else rng.uniform(0.2, 1.0)
        centre = (rng.uniform(x_min, x_max), half[1] + lift, rng.uniform(2.0, z_max))
        objects.append(Box(centre, half, rng.uniform(0, math.pi / 2)))
    for _ in range(int(rng.integers(0, 4))):
        radius = rng.uniform(0.2, 0.8)
        lift = 0.0 if rng.random() < 0.7 else rng.uniform(0.2, 1.0)
        objects.append(Sphere((rng.uniform(x_min, x_max), radius + lift, rng.uniform(2.0, z_max)), radius))
    return objects


def _camera(rng: np.random.Generator, width: int) -> tuple[float, float, float, np.ndarray]:
    """Focal length (px), yaw and pitch (radians) and origin ``[3]`` of a random camera."""
    focal = (width / 2) / math.tan(math.radians(rng.uniform(50.0, 80.0)) / 2)
    yaw, pitch = math.radians(rng.uniform(-10, 10)), math.radians(rng.uniform(-15, 5))
    origin = np.array([0.0, rng.uniform(0.8, 2.0), 0.0], dtype=np.float32)
    return focal, yaw, pitch, origin


def _rays(height: int, width: int, focal: float, yaw: float, pitch: float) -> np.ndarray:
    """World ray directions ``[3,N]`` whose camera-frame z is 1."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5  # [H,W] pixel centres
    cam = np.stack([(xs - width / 2) / focal, -(ys - height / 2) / focal, np.ones_like(xs)]).reshape(3, -1)
    return (_rot_y(yaw) @ _rot_x(pitch)) @ cam  # [3,N]


def _world(rng: np.random.Generator) -> dict:
    """Room or open ground, objects, textures and lighting."""
    planes, bounds = _room(rng)
    scene = planes + _objects(rng, bounds)
    textures = [random_texture(rng) for _ in scene]
    light = rng.normal(size=3) * np.array([1.0, 0.3, 1.0]) + np.array([0.0, 1.0, -0.3])
    light = (light / np.linalg.norm(light)).astype(np.float32)
    ambient, strength = rng.uniform(0.25, 0.5), rng.uniform(0.5, 0.9)
    return {"scene": scene, "outdoor": len(planes) == 1, "textures": textures, "light": light,
            "ambient": ambient, "strength": strength}


def _shade(world: dict, origin: np.ndarray, dirs: np.ndarray, grain: np.random.Generator, height: int,
           width: int) -> tuple[np.ndarray, np.ndarray]:
    scene = world["scene"]
    best_t = np.full(dirs.shape[1], np.inf, dtype=np.float32)  # [N]
    best_id = np.full(dirs.shape[1], -1, dtype=np.int64)
    for k, obj in enumerate(scene):
        t = obj.intersect(origin, dirs)
        closer = t < best_t
        best_t, best_id = np.where(closer, t, best_t), np.where(closer, k, best_id)
    if world["outdoor"]:  # open ground: the far floor fades into sky
        best_id[best_t > MAX_OUTDOOR_DEPTH] = -1
        best_t[best_id < 0] = np.inf
    elevation = dirs[1] / np.sqrt((dirs * dirs).sum(axis=0))
    rgb = (np.array([0.55, 0.7, 0.95]) + (1 - np.clip(elevation, 0, 1))[:, None] * 0.3).astype(np.float32)  # sky
    for k, obj in enumerate(scene):
        hit = np.nonzero(best_id == k)[0]
        if hit.size == 0:
            continue
        normal, uv = obj.surface(origin + best_t[hit, None] * dirs[:, hit].T)  # [M,3], [M,2]
        diffuse = np.clip(normal @ world["light"], 0.0, None)  # [M]
        rgb[hit] = shade_texture(world["textures"][k], uv) * (world["ambient"] + world["strength"] * diffuse)[:, None]
    rgb += (grain.random(rgb.shape, dtype=np.float32) - 0.5) * 0.03  # sensor-like grain
    rgb = np.clip(rgb, 0.0, 1.0).reshape(height, width, 3).transpose(2, 0, 1)  # [3,H,W]
    return np.ascontiguousarray(rgb, dtype=np.float32), best_t.reshape(height, width)


def render(height: int, width: int, index: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB ``[3,H,W]`` in [0,1] and planar depth ``[H,W]`` in metres (inf where a ray sees sky)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index)])
    focal, yaw, pitch, origin = _camera(rng, width)
    world = _world(rng)
    return _shade(world, origin, _rays(height, width, focal, yaw, pitch), rng, height, width)


def render_path(height: int, width: int, index: int, seed: int, frames: int, step: float = 0.03,
                turn: float = 0.4, mover: float = 0.0):
    """Frames of scene ``index`` seen from a camera that moves: each frame it advances ``step`` metres along its
    view direction (projected on the ground), drifts sideways by half that, and turns ``turn`` degrees.

    ``mover`` (metres per frame, 0 = none) adds a textured ball, 0.35 m across, 2.5 m in front of the first camera,
    that crosses the view from left to right at that speed: a moving object, with its occlusions.

    Yields ``(rgb [3,H,W], depth [H,W])`` per frame, like :func:`render`; the first frame's camera is
    :func:`render`'s, and the sensor grain differs from frame to frame.
    """
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index)])
    focal, yaw, pitch, origin = _camera(rng, width)
    world = _world(rng)
    ball = None
    if mover:
        ahead = np.array([math.sin(yaw), 0.0, math.cos(yaw)], dtype=np.float32)
        across = np.array([math.cos(yaw), 0.0, -math.sin(yaw)], dtype=np.float32)
        start = origin + 2.5 * ahead - across * (mover * frames / 2)
        ball = Sphere(start, 0.35)
        world = {**world, "scene": world["scene"] + [ball],
                 "textures": world["textures"] + [random_texture(np.random.default_rng([int(seed), int(index), 7]))]}
    for k in range(int(frames)):
        heading = yaw + math.radians(turn) * k
        forward = np.array([math.sin(heading), 0.0, math.cos(heading)], dtype=np.float32)
        side = np.array([math.cos(heading), 0.0, -math.sin(heading)], dtype=np.float32)
        position = origin + (forward + 0.5 * side) * step * k
        if ball is not None:
            ball.centre = (start + across * (mover * k)).astype(np.float32)
        grain = rng if k == 0 else np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), k])
        yield _shade(world, position.astype(np.float32), _rays(height, width, focal, heading, pitch), grain,
                     height, width)

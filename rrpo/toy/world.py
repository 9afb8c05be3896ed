"""A procedural video world: coloured shapes that appear, move in straight lines and disappear.

Built so that a tiny video LLM (e.g. a Qwen2-VL with 14-px patches on 64x64 frames) can see what it is
asked about, and so that RRPO's perturbations (frame masking, shuffling; Sarkar et al., arXiv
2504.12083) change the right answer:

- Shapes are large (`shape_size` 18 px by default, above a 14-px patch) and move at least
  `speed_min` = 3 px per frame; an earlier experiment did not tell 12-px shapes apart and barely saw
  1.7 px of motion per frame.
- Few colours and shapes (4 x 3), never two objects of one colour in a clip, so "the red circle" names
  one object and its colour alone finds it in the pixels.
- Objects appear at distinct frames (at least `min_gap` apart) and may disappear before the end, so
  shuffling frames changes the order and masking frames can hide an object.
- A controllable language prior: the `prior_colour` moves in `prior_direction` with probability
  `prior_strength` (0.75 in training clips) and uniformly among the other three directions
  otherwise; every other colour moves uniformly. Held-out clips use 0.5 (the prior is broken half of
  the time), and `against_prior=True` samples clips where it is always broken.

Everything here is a pure function of its arguments: a scene is a function of the numpy Generator
that samples it, a clip a function of its scene, and the questions (`rrpo.toy.questions`) a function
of scene and Generator.

Coordinates are pixels; an object's centre at frame t is (x + vx * (t - start), y + vy * (t - start)),
integers, and the whole shape stays inside the frame while it is visible. Frame indices are 0-based
in code and 1-based in the text a model reads ("appears at frame 1").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from rrpo.errors import RRPOError

# RGB, chosen far apart in chroma so they survive H.264's 4:2:0 subsampling (checked in the tests by
# nearest-palette classification of decoded mp4 frames).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 50),
    "magenta": (220, 60, 220),
    "cyan": (50, 220, 230),
    "white": (235, 235, 235),
}
BACKGROUND: tuple[int, int, int] = (0, 0, 0)
# "black": the plain background. "gradient": red rises left -> right and blue top -> bottom (0 .. 110,
# far below the palette's brightness), so every patch's pixels say where in the frame it is: the
# vision tower of a tiny model has no absolute position embedding, and the language model then has to
# find an object's place from rotary positions alone, which a 4-layer model did not learn (docs/toy.md).
BACKGROUNDS: tuple[str, ...] = ("black", "gradient")
# The order question: "pair" asks "Which appears first, the red circle or the blue square?" with those
# two options; "colour" asks "Which colour appears first?" with the palette's colours as options
# (what the committed toy model answers: it never learned the two-option question, docs/toy.md).
ORDER_QUESTIONS: tuple[str, ...] = ("pair", "colour")
# The description ("Describe the video."): "full" names objects by colour and shape ("A red circle moves
# left."), "colour" by colour alone ("A red object moves left."): the description the toy model learns to
# write (the seventh checkpoint), and which `rrpo.toy.factcheck` checks fact by fact.
DESCRIPTIONS: tuple[str, ...] = ("full", "colour")
GRADIENT_MAX = 110
# Motion trail (`WorldConfig.trail` = k): the object's positions 1 .. k frames earlier (never before it
# appears) drawn under it at these fractions of its colour, like a camera's motion blur. A tiny vision
# tower with 2-frame temporal patches did not learn to tell direction from position changes across
# tokens (docs/toy.md); a trail makes each frame's patch show where the object came from. Dim enough
# that the nearest palette colour of a trail pixel is the background, even after H.264.
TRAIL_ALPHAS: tuple[float, ...] = (0.35, 0.2, 0.1)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Unit velocity of each direction in image coordinates (y grows downwards).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

CAPTION_PROMPT = "List every object in the video with its colour, shape, motion and the frames it is visible."
DESCRIBE_PROMPT = "Describe the video."


@dataclass(frozen=True)
class WorldConfig:
    """Every parameter of the world. `frames` x `size` x `size` clips; `shape_size` is the side of a
    square (the diameter of a circle, the base and height of a triangle) in pixels."""

    frames: int = 16
    size: int = 64
    shape_size: int = 18
    speed_min: int = 3  # px per frame
    speed_max: int = 4
    min_objects: int = 1
    max_objects: int = 3
    min_visible: int = 5  # frames an object is visible at least
    min_gap: int = 3  # frames between the appearances of two objects at least
    max_first_start: int = 3  # the first object appears by this frame
    p_stay: float = 0.5  # probability that an object stays until the last frame
    separation: int = 2  # px kept between the boxes of two objects visible at once
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
    shapes: tuple[str, ...] = SHAPES
    prior_colour: str = "red"
    prior_direction: str = "left"
    prior_strength: float = 0.75
    background: str = "black"  # one of BACKGROUNDS
    trail: int = 0  # earlier positions drawn dimmed behind a moving object (at most len(TRAIL_ALPHAS))
    order_question: str = "pair"  # one of ORDER_QUESTIONS
    description: str = "full"  # one of DESCRIPTIONS

    def validate(self) -> None:
        """Raise RRPOError naming the parameter when the world cannot be sampled as configured."""
        if self.frames < 2 or self.size < 2 or self.size % 2:
            raise RRPOError(
                f"world: frames must be >= 2 and size an even number >= 2 (H.264), got {self.frames}, {self.size}"
            )
        if not 1 <= self.speed_min <= self.speed_max:
            raise RRPOError(
                f"world: need 1 <= speed_min <= speed_max, got {self.speed_min}, {self.speed_max}"
            )
        if not 1 <= self.min_objects <= self.max_objects:
            raise RRPOError(
                f"world: need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        unknown = [c for c in self.colours if c not in PALETTE]
        if unknown:
            raise RRPOError(f"world: unknown colours {unknown}; known: {sorted(PALETTE)}")
        if len(set(self.colours)) != len(self.colours) or len(set(self.shapes)) != len(self.shapes):
            raise RRPOError("world: colours and shapes must not repeat")
        bad_shapes = [s for s in self.shapes if s not in SHAPES]
        if bad_shapes or not self.shapes:
            raise RRPOError(f"world: shapes must be a non-empty subset of {SHAPES}, got {list(self.shapes)}")
        if self.max_objects >= len(self.colours):
            # One colour is kept free so that every clip has an absent colour for "no" probes.
            raise RRPOError(
                f"world: max_objects ({self.max_objects}) must be below the number of colours ({len(self.colours)})"
            )
        if self.prior_colour not in self.colours:
            raise RRPOError(
                f"world: prior_colour {self.prior_colour!r} is not one of the colours {list(self.colours)}"
            )
        if self.prior_direction not in DIRECTIONS:
            raise RRPOError(
                f"world: prior_direction must be one of {list(DIRECTIONS)}, got {self.prior_direction!r}"
            )
        if not 0.0 <= self.prior_strength <= 1.0:
            raise RRPOError(f"world: prior_strength must be in [0, 1], got {self.prior_strength}")
        if self.background not in BACKGROUNDS:
            raise RRPOError(f"world: background must be one of {list(BACKGROUNDS)}, got {self.background!r}")
        if self.order_question not in ORDER_QUESTIONS:
            raise RRPOError(
                f"world: order_question must be one of {list(ORDER_QUESTIONS)}, got {self.order_question!r}"
            )
        if self.description not in DESCRIPTIONS:
            raise RRPOError(
                f"world: description must be one of {list(DESCRIPTIONS)}, got {self.description!r}"
            )
        if not 0 <= self.trail <= len(TRAIL_ALPHAS):
            raise RRPOError(f"world: trail must be in [0, {len(TRAIL_ALPHAS)}] frames, got {self.trail}")
        if not 0.0 <= self.p_stay <= 1.0:
            raise RRPOError(f"world: p_stay must be in [0, 1], got {self.p_stay}")
        if self.min_visible < 2 or self.min_visible > self.frames:
            raise RRPOError(f"world: min_visible must be in [2, frames], got {self.min_visible}")
        if (self.max_objects - 1) * self.min_gap > self.frames - self.min_visible:
            raise RRPOError(
                f"world: {self.max_objects} objects appearing {self.min_gap} frames apart and visible for "
                f"{self.min_visible} frames do not fit in {self.frames} frames"
            )
        if self.speed_min * (self.min_visible - 1) > self.travel():
            raise RRPOError(
                f"world: a {self.shape_size}-px shape moving {self.speed_min} px/frame for {self.min_visible} frames "
                f"leaves a {self.size}-px frame; lower speed_min, min_visible or shape_size"
            )

    def travel(self) -> int:
        """How far (px) a centre can move while the whole shape stays inside the frame."""
        return self.size - 2 * math.ceil(self.shape_size / 2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldConfig:
        """Inverse of `to_dict`; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RRPOError(f"world config: unknown parameters {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class SceneObject:
    """One shape: visible in frames [start, end), centre (x, y) at frame `start`, velocity (vx, vy) px/frame."""

    colour: str
    shape: str
    start: int
    end: int
    x: int
    y: int
    vx: int
    vy: int

    @property
    def name(self) -> str:
        """'red circle'."""
        return f"{self.colour} {self.shape}"

    @property
    def direction(self) -> str:
        """'left' / 'right' / 'up' / 'down' (motion is along one axis)."""
        unit = (int(np.sign(self.vx)), int(np.sign(self.vy)))
        for name, vec in DIRECTIONS.items():
            if vec == unit:
                return name
        raise ValueError(f"object {self.name} has no single direction (velocity {self.vx}, {self.vy})")

    @property
    def speed(self) -> int:
        return abs(self.vx) + abs(self.vy)

    def visible(self, t: int) -> bool:
        return self.start <= t < self.end

    def centre(self, t: int) -> tuple[int, int]:
        """Centre (x, y) in pixels at frame t (extrapolated outside the visible range)."""
        return self.x + self.vx * (t - self.start), self.y + self.vy * (t - self.start)


@dataclass(frozen=True)
class Scene:
    """A clip's content: objects in order of appearance (strictly increasing `start`)."""

    objects: tuple[SceneObject, ...]
    frames: int = 16
    size: int = 64
    shape_size: int = 18
    background: str = "black"
    trail: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = {
            "frames": self.frames,
            "size": self.size,
            "shape_size": self.shape_size,
            "objects": [asdict(o) for o in self.objects],
        }
        if self.background != "black":  # black scenes keep the layout of worlds made before the option
            out["background"] = self.background
        if self.trail:
            out["trail"] = self.trail
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        objects = tuple(SceneObject(**o) for o in data["objects"])
        return cls(
            objects=objects,
            frames=data["frames"],
            size=data["size"],
            shape_size=data["shape_size"],
            background=data.get("background", "black"),
            trail=int(data.get("trail", 0)),
        )

    def colours(self) -> list[str]:
        return [o.colour for o in self.objects]

    def by_colour(self, colour: str) -> SceneObject | None:
        return next((o for o in self.objects if o.colour == colour), None)


# ---------------------------------------------------------------------------------------------------
# Sampling


def sample_scene(
    rng: np.random.Generator,
    config: WorldConfig | None = None,
    *,
    n_objects: int | None = None,
    prior_strength: float | None = None,
    against_prior: bool = False,
    max_tries: int = 200,
) -> Scene:
    """Sample a scene. `n_objects` fixes the number of objects (the curriculum's single-object clips);
    `prior_strength` overrides the config's (0.5 for held-out clips); `against_prior` puts the prior
    colour in the clip moving in one of the three non-prior directions (the prior-break benchmark).

    Objects never overlap (their boxes stay `separation` px apart in every frame where both are
    visible), so each object's pixels are exactly its shape. Raises RRPOError if no placement is
    found in `max_tries` attempts (only with crowded configs).
    """
    cfg = config or WorldConfig()
    cfg.validate()
    p = cfg.prior_strength if prior_strength is None else float(prior_strength)
    if not 0.0 <= p <= 1.0:
        raise RRPOError(f"prior_strength must be in [0, 1], got {p}")
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1)) if n_objects is None else int(n_objects)
    if not 1 <= n <= cfg.max_objects:
        raise RRPOError(f"n_objects must be in [1, {cfg.max_objects}], got {n}")
    for _ in range(max_tries):
        colours = _sample_colours(rng, cfg, n, against_prior)
        starts = _sample_starts(rng, cfg, n)
        objects: list[SceneObject] = []
        for colour, start in zip(colours, starts):
            obj = _place_object(rng, cfg, colour, start, p, against_prior, objects)
            if obj is None:
                break
            objects.append(obj)
        else:
            return Scene(
                tuple(objects),
                frames=cfg.frames,
                size=cfg.size,
                shape_size=cfg.shape_size,
                background=cfg.background,
                trail=cfg.trail,
            )
    raise RRPOError(
        f"could not place {n} non-overlapping objects in {max_tries} tries; use fewer or smaller shapes"
    )


def _sample_colours(rng: np.random.Generator, cfg: WorldConfig, n: int, against_prior: bool) -> list[str]:
    """n distinct colours in a random order (which object appears first is random too)."""
    if not against_prior:
        return [str(c) for c in rng.permutation(np.array(cfg.colours))[:n]]
    others = [c for c in cfg.colours if c != cfg.prior_colour]
    chosen = [str(c) for c in rng.permutation(np.array(others))[: n - 1]] + [cfg.prior_colour]
    return [str(c) for c in rng.permutation(np.array(chosen))]


def _sample_starts(rng: np.random.Generator, cfg: WorldConfig, n: int) -> list[int]:
    """Strictly increasing appearance frames, `min_gap` apart, the first by `max_first_start`,
    every one early enough to stay `min_visible` frames."""
    last = cfg.frames - cfg.min_visible
    first = int(rng.integers(0, min(cfg.max_first_start, last - (n - 1) * cfg.min_gap) + 1))
    starts = [first]
    for i in range(1, n):
        # Leave room for the objects still to come.
        hi = last - (n - 1 - i) * cfg.min_gap
        starts.append(int(rng.integers(starts[-1] + cfg.min_gap, hi + 1)))
    return starts


def _sample_direction(
    rng: np.random.Generator, cfg: WorldConfig, colour: str, p: float, against: bool
) -> str:
    names = list(DIRECTIONS)
    if colour != cfg.prior_colour:
        return names[int(rng.integers(len(names)))]
    others = [d for d in names if d != cfg.prior_direction]
    if not against and rng.random() < p:
        return cfg.prior_direction
    return others[int(rng.integers(len(others)))]


def _place_object(
    rng: np.random.Generator,
    cfg: WorldConfig,
    colour: str,
    start: int,
    p: float,
    against: bool,
    placed: list[SceneObject],
    tries: int = 30,
) -> SceneObject | None:
    """Sample shape, direction, visible span, speed and start position; None if every try overlaps."""
    shape = cfg.shapes[int(rng.integers(len(cfg.shapes)))]
    direction = _sample_direction(rng, cfg, colour, p, against)
    ux, uy = DIRECTIONS[direction]
    travel = cfg.travel()
    lo = math.ceil(cfg.shape_size / 2)  # smallest centre coordinate that keeps the shape inside
    for _ in range(tries):
        if start + cfg.min_visible >= cfg.frames or rng.random() < cfg.p_stay:
            end = cfg.frames
        else:
            end = int(rng.integers(start + cfg.min_visible, cfg.frames))
        # At speed_min the shape must not leave the frame: shorten the visible span if needed.
        end = min(end, start + travel // cfg.speed_min + 1)
        steps = end - start - 1
        fastest = min(cfg.speed_max, travel // steps) if steps else cfg.speed_max
        speed = int(rng.integers(cfg.speed_min, fastest + 1))
        span = speed * steps
        # Along the motion axis the start leaves room for the whole path; across it anywhere inside.
        along = int(rng.integers(0, travel - span + 1))
        across = lo + int(rng.integers(0, travel + 1))
        if ux:
            x = lo + (along if ux > 0 else along + span)
            y = across
        else:
            y = lo + (along if uy > 0 else along + span)
            x = across
        obj = SceneObject(colour, shape, start, end, x, y, ux * speed, uy * speed)
        if not any(_overlaps(obj, other, cfg.shape_size + cfg.separation) for other in placed):
            return obj
    return None


def _overlaps(a: SceneObject, b: SceneObject, distance: int) -> bool:
    """Whether the boxes of a and b come closer than `distance` (centre to centre, per axis) in a
    frame where both are visible."""
    for t in range(max(a.start, b.start), min(a.end, b.end)):
        (ax, ay), (bx, by) = a.centre(t), b.centre(t)
        if abs(ax - bx) < distance and abs(ay - by) < distance:
            return True
    return False


# ---------------------------------------------------------------------------------------------------
# Rendering


def shape_mask(
    shape: str, cx: float, cy: float, half: float, height: int, width: int | None = None
) -> np.ndarray:
    """Bool [height, width] mask of a shape centred at (cx, cy) with half-extent `half`, sampled at
    pixel centres (j + 0.5). Triangles point up: apex at cy - half, base of width 2 * half at cy + half."""
    xx = (np.arange(height if width is None else width) + 0.5)[None, :]
    yy = (np.arange(height) + 0.5)[:, None]
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= half**2
    if shape == "square":
        return (np.abs(xx - cx) <= half) & (np.abs(yy - cy) <= half)
    if shape == "triangle":
        depth = yy - (cy - half)  # distance below the apex
        return (depth >= 0) & (yy <= cy + half) & (np.abs(xx - cx) <= depth / 2)
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _draw(image: np.ndarray, shape: str, cx: float, cy: float, half: float, colour: np.ndarray) -> None:
    """Paint a shape into image [H, W, 3] in place, computing its mask only in its bounding box."""
    h, w = image.shape[:2]
    x0, x1 = max(0, math.floor(cx - half) - 1), min(w, math.ceil(cx + half) + 1)
    y0, y1 = max(0, math.floor(cy - half) - 1), min(h, math.ceil(cy + half) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    mask = shape_mask(shape, cx - x0, cy - y0, half, y1 - y0, x1 - x0)
    image[y0:y1, x0:x1][mask] = colour


def background_image(kind: str, size: int) -> np.ndarray:
    """uint8 [size, size, 3] background: BACKGROUND for "black"; for "gradient" red = GRADIENT_MAX * x
    and blue = GRADIENT_MAX * y with x, y the pixel centre's position in [0, 1] (0 = left / top)."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    if kind == "black":
        image[...] = BACKGROUND
        return image
    if kind != "gradient":
        raise ValueError(f"unknown background {kind!r}; known: {BACKGROUNDS}")
    ramp = np.round(GRADIENT_MAX * (np.arange(size) + 0.5) / size).astype(np.uint8)
    image[:, :, 0] = ramp[None, :]
    image[:, :, 2] = ramp[:, None]
    return image


def render_clip(scene: Scene, *, frames: int | None = None, size: int | None = None) -> np.ndarray:
    """Render a scene to uint8 RGB frames [T, H, W, 3] with T = `frames`, H = W = `size`.

    Both default to the scene's own (16 x 64 x 64 by default). A different `size` scales positions and
    shapes (render a 64-px scene at 128 px for a figure); `frames` must equal the scene's.
    """
    t_total = scene.frames if frames is None else int(frames)
    side = scene.size if size is None else int(size)
    if t_total != scene.frames:
        raise ValueError(f"scene was sampled for {scene.frames} frames, cannot render {t_total}")
    if side < 2 or side % 2:
        raise ValueError(f"size must be an even number >= 2 (H.264), got {side}")
    scale = side / scene.size
    video = np.empty((t_total, side, side, 3), dtype=np.uint8)
    ground = background_image(scene.background, side)
    video[...] = ground
    half = scene.shape_size / 2 * scale
    odd = 0.5 if scene.shape_size % 2 else 0.0
    # Trails first, under every object: a pixel behind several earlier positions takes the strongest
    # (most recent) one's alpha, blended once over the background (where two objects' trails cross,
    # the later object's wins: a pixel is never a mix of two colours).
    for obj in scene.objects if scene.trail else ():
        colour = np.array(PALETTE[obj.colour], dtype=np.float32)
        for t in range(obj.start, obj.end):
            alpha = np.zeros((side, side, 1), dtype=np.float32)
            for back in range(1, min(scene.trail, t - obj.start) + 1):
                cx, cy = obj.centre(t - back)
                ghost = np.zeros((side, side, 1), dtype=np.float32)
                _draw(ghost, obj.shape, (cx + odd) * scale, (cy + odd) * scale, half, np.ones(1))
                alpha = np.maximum(alpha, TRAIL_ALPHAS[back - 1] * ghost)
            if alpha.any():
                blend = np.round(ground * (1 - alpha) + colour * alpha).astype(np.uint8)
                video[t] = np.where(alpha > 0, blend, video[t])
    for obj in scene.objects:
        colour = np.array(PALETTE[obj.colour], dtype=np.uint8)
        for t in range(obj.start, obj.end):
            cx, cy = obj.centre(t)
            # Pixel j covers [j, j + 1). An even-sized shape is centred on a pixel corner (integer
            # coordinate), an odd-sized one on a pixel centre, so a square covers exactly
            # shape_size pixels per side and the shape is symmetric about its centre.
            _draw(video[t], obj.shape, (cx + odd) * scale, (cy + odd) * scale, half, colour)
    return video

"""Drawn scenes whose answers live in a few image patches, shared by the three synthetic benchmarks.

A scene is a 168 px canvas (12 x 12 patches of 14 px, LLaVA's 144 image tokens at the testbed's size) split in
a 3 x 3 grid of regions ("top left" ... "bottom right"), each region 4 x 4 patches. An object is a small
coloured shape drawn inside one 2 x 2-patch slot of its region, aligned to the patch grid, so it covers 4 of
the 144 patches: whatever the question asks about lives in about 4 image tokens, as the small details of real
benchmarks (TextVQA, GQA, POPE) do. Grey marks (clutter) lie where there is no object, so the patches around
an object are not blank either.

Object counts are spread on purpose: one colour and one shape are each given to 0 to 3 objects (every count
equally likely), so counting questions are not nearly always "0" or "1", and a blank canvas does not pass
them for free.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
OBJECT_SHAPES = ("circle", "square", "triangle", "cross")
POSITIONS = (
    "top left", "top middle", "top right",
    "middle left", "centre", "middle right",
    "bottom left", "bottom middle", "bottom right",
)  # fmt: skip
CORNERS = {0: "top left", 2: "top right", 6: "bottom left", 8: "bottom right"}
BACKGROUND = (250, 250, 250)
CLUTTER = (150, 150, 150)
IMAGE_SIZE = 168
PATCH = 14  # the testbed's patch size: the scene is laid out on this grid
GRID = IMAGE_SIZE // PATCH  # 12 patches a side
REGION = GRID // 3  # 4 patches a side
MAX_OBJECTS = 6
# The post prompt of the stock pope and textvqa tasks (their default lmms_eval_specific_kwargs).
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."


@dataclass(frozen=True)
class Thing:
    """One object: its colour, its shape and its slot (0-3, reading order) among its region's four."""

    colour: str
    shape: str
    slot: int


@dataclass(frozen=True)
class Scene:
    """Objects by region (0-8, reading order) and clutter marks as (x0, y0, x1, y1) line segments in pixels
    of a :data:`IMAGE_SIZE` canvas."""

    objects: dict[int, Thing]
    clutter: tuple[tuple[int, int, int, int], ...] = ()

    def patches(self, region: int) -> list[int]:
        """The 4 patches (raster order on the 12 x 12 grid) covered by the object of ``region``."""
        row, column = self.origin(region)
        return [(row + dy) * GRID + column + dx for dy in (0, 1) for dx in (0, 1)]

    def origin(self, region: int) -> tuple[int, int]:
        """Patch row and column of the top-left patch of the object of ``region``."""
        slot = self.objects[region].slot
        return (region // 3) * REGION + 2 * (slot // 2), (region % 3) * REGION + 2 * (slot % 2)

    def count(self, colour: str | None = None, shape: str | None = None) -> int:
        return sum(
            (colour is None or thing.colour == colour) and (shape is None or thing.shape == shape)
            for thing in self.objects.values()
        )

    def description(self) -> str:
        """Every object in reading order: "top left red circle, centre blue square." """
        return ", ".join(f"{POSITIONS[r]} {t.colour} {t.shape}" for r, t in sorted(self.objects.items())) + "."

    def inventory(self, by: str = "shape") -> str:
        """Every shape (in :data:`OBJECT_SHAPES` order) or colour (:data:`COLOURS` order), how many objects have it and
        those objects in reading order: "circle 2: blue centre, red bottom left; square 0; triangle 1: red top
        left; cross 0." (by shape), "red 2: triangle top left, circle bottom left; green 0; ..." (by colour)."""
        if by not in ("shape", "colour"):
            raise ValueError(f"by={by!r}: an inventory is by 'shape' or 'colour'")
        other = "colour" if by == "shape" else "shape"
        groups = []
        for name in OBJECT_SHAPES if by == "shape" else COLOURS:
            members = [(r, t) for r, t in sorted(self.objects.items()) if getattr(t, by) == name]
            items = ", ".join(f"{getattr(t, other)} {POSITIONS[r]}" for r, t in members)
            groups.append(f"{name} {len(members)}: {items}" if members else f"{name} 0")
        return "; ".join(groups) + "."


def make_scene(rng: random.Random) -> Scene:
    """2 to 6 objects in distinct regions, one per region in a random slot; one colour and one shape each on 0
    to 3 of them (the other objects get the other colours and shapes); 4 to 10 clutter marks off the objects."""
    shared_colour, shared_shape = rng.randint(0, 3), rng.randint(0, 3)
    regions = rng.sample(range(9), rng.randint(max(2, shared_colour, shared_shape), MAX_OBJECTS))
    colour, shape = rng.choice(list(COLOURS)), rng.choice(OBJECT_SHAPES)
    with_colour, with_shape = set(rng.sample(regions, shared_colour)), set(rng.sample(regions, shared_shape))
    other_colours = [name for name in COLOURS if name != colour]
    other_shapes = [name for name in OBJECT_SHAPES if name != shape]
    objects = {
        region: Thing(
            colour if region in with_colour else rng.choice(other_colours),
            shape if region in with_shape else rng.choice(other_shapes),
            rng.randrange(4),
        )
        for region in regions
    }
    scene = Scene(objects)
    taken = {patch for region in objects for patch in scene.patches(region)}
    free = [patch for patch in range(GRID * GRID) if patch not in taken]
    marks = []
    for patch in rng.sample(free, rng.randint(4, 10)):
        x, y = (patch % GRID) * PATCH + rng.randint(2, 8), (patch // GRID) * PATCH + rng.randint(2, 8)
        length = rng.randint(3, 5)
        marks.append((x, y, x + length, y) if rng.random() < 0.5 else (x, y, x, y + length))
    return Scene(objects, tuple(marks))


def draw_scene(scene: Scene) -> Image.Image:
    """The scene on a near-white canvas; every object fills its 2 x 2-patch slot less a 3 px margin."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for x0, y0, x1, y1 in scene.clutter:
        draw.line([x0, y0, x1, y1], fill=CLUTTER, width=2)
    margin = 3
    for region, thing in scene.objects.items():
        row, column = scene.origin(region)
        left, top = column * PATCH + margin, row * PATCH + margin
        right, bottom = (column + 2) * PATCH - margin - 1, (row + 2) * PATCH - margin - 1
        _draw_shape(draw, thing.shape, (left, top, right, bottom), COLOURS[thing.colour])
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: tuple) -> None:
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)
    else:
        arm = (right - left) / 6
        middle_x, middle_y = (left + right) / 2, (top + bottom) / 2
        draw.rectangle([middle_x - arm, top, middle_x + arm, bottom], fill=fill)
        draw.rectangle([left, middle_y - arm, right, middle_y + arm], fill=fill)

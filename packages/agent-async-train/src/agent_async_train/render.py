"""Animated GIFs of GemGrid episodes (``agent-train evaluate --record``).

One vectorised RGB frame per turn from the game's arrays (walls, gems, agent positions),
scaled up with ``np.kron``; Pillow writes the GIF to a temporary file that is renamed into
place, so an interrupted recording never leaves a broken file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parallel_core.io import atomic_write

_FLOOR, _WALL, _GEM = (235, 235, 225), (70, 70, 80), (40, 170, 220)
# distinct agent colours (tab10-like), cycled for many agents
_AGENTS = np.array(
    [(214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
     (227, 119, 194), (188, 189, 34), (23, 190, 207)],
    dtype=np.uint8,
)


def gemgrid_frame(game, scale: int = 16) -> np.ndarray:
    """An ``(H*scale, W*scale, 3)`` uint8 picture of a GemGrid's current state."""
    img = np.empty((game.size, game.size, 3), dtype=np.uint8)
    img[...] = _FLOOR
    img[game.wall] = _WALL
    img[game.gem] = _GEM
    img[game.pos[:, 0], game.pos[:, 1]] = _AGENTS[np.arange(game.num_agents) % len(_AGENTS)]
    return np.kron(img, np.ones((scale, scale, 1), dtype=np.uint8))


def save_gif(frames: list[np.ndarray], path: str | Path, ms_per_frame: int = 150) -> None:
    """Write ``frames`` (RGB uint8 arrays) as a looping GIF at ``path``, atomically."""
    from PIL import Image

    if not frames:
        raise ValueError("no frames to record")
    images = [Image.fromarray(f) for f in frames]
    with atomic_write(path, "wb") as f:
        images[0].save(
            f, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0
        )

"""Images as densities (``kind = "image"``): a PNG or ``.npy`` array over the domain box.

Not collective (each rank reads the file itself).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["load_image"]

FloatArray = npt.NDArray[np.float64]


def load_image(path: str | Path, gdim: int) -> FloatArray:
    """Read an image as node values of a regular grid over the bounding box.

    A PNG (2D only) is read with pillow: greyscale as is, colour images converted to luminance
    (pillow's ``L`` mode, ITU-R 601-2 weights; alpha ignored), values scaled to [0, 1] (8-bit by
    255, 16-bit by 65535). Image row 0 is the *top* of the box (largest y), column 0 its left
    (smallest x). A ``.npy`` array of dimension ``gdim`` is indexed ``[i_x, i_y]`` or
    ``[i_x, i_y, i_z]``, index 0 at the lower corner, and used unscaled.

    In both cases the first and last samples along an axis sit on the box faces (node-centred,
    not pixel-centred), so an array sampled on ``linspace(lo, hi, n)`` is reproduced exactly.

    Args:
        path: A ``.npy`` file, or an image file pillow reads (PNG).
        gdim: Dimension of the mesh, 2 or 3.

    Returns:
        Node values indexed ``[i_x, i_y(, i_z)]``, at least 2 nodes per axis.

    Raises:
        RuntimeError: The file is missing or unreadable (chained to the cause).
        ValueError: The array has the wrong dimension, fewer than 2 nodes along an axis, or
            non-finite values.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            grid = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise RuntimeError(f"cannot read image array {str(path)!r}: {err}") from err
        if grid.ndim != gdim or not np.issubdtype(grid.dtype, np.number):
            raise ValueError(
                f"image array {str(path)!r} must be a {gdim}D numeric array for gdim={gdim}, "
                f"got shape {grid.shape} and dtype {grid.dtype}"
            )
        grid = np.asarray(grid, dtype=np.float64)
    else:
        if gdim != 2:
            raise ValueError(
                f"a PNG image ({str(path)!r}) needs a 2D mesh, got gdim={gdim}; use a 3D .npy array"
            )
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                if img.mode.startswith("I;16") or img.mode == "I":
                    pixels = np.asarray(img, dtype=np.float64) / 65535.0
                elif img.mode == "F":
                    pixels = np.asarray(img, dtype=np.float64)
                else:
                    pixels = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise RuntimeError(f"cannot read image {str(path)!r}: {err}") from err
        grid = np.ascontiguousarray(pixels[::-1, :].T)  # [row, col] top-down -> [i_x, i_y]
    if min(grid.shape) < 2:
        raise ValueError(f"image {str(path)!r} needs >= 2 samples per axis, got {grid.shape}")
    if not np.all(np.isfinite(grid)):
        raise ValueError(f"image {str(path)!r} has NaN or inf values")
    return grid

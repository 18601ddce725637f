"""Images as densities (``kind = "image"``): a PNG or ``.npy`` array over a box.

The convention (docs/density.md):

* image row 0 is the *top* of the box (largest y), column 0 its left (smallest x); a ``.npy``
  array is indexed ``[i_x, i_y(, i_z)]`` from the lower corner;
* the first and last pixels along an axis sit *on* the box faces (node-centred), so an image of
  ``W x H`` pixels has ``W - 1`` by ``H - 1`` pixel spacings;
* values between pixels are bilinear (trilinear in 3D);
* the box is the mesh's bounding box, whose aspect ratio must then match the image's (to within
  one pixel: :func:`image_box`); or the box ``image_extent = [x0, x1, y0, y1(, z0, z1)]`` given
  by the user, with any aspect ratio, outside of which the image is 0 (the floor remains).

Not collective (each rank reads the file itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["image_box", "load_image"]

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
    from beckmann._resources import read_npy, regular_file  # no FIFO, device, pickle or OOM

    try:
        regular_file(path, "image file")
        grid = read_npy(path, "image array") if path.suffix.lower() == ".npy" else None
    except ValueError as err:  # an unreadable file is a RuntimeError here
        raise RuntimeError(str(err)) from err
    if grid is not None:
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


def image_box(
    shape: tuple[int, ...],
    bbox: tuple[FloatArray, FloatArray],
    extent: Sequence[float] | None,
    path: str | Path,
) -> tuple[FloatArray, FloatArray]:
    """The box ``(lo, hi)`` an image of node-grid ``shape`` covers.

    Args:
        shape: Node counts per axis ``[n_x, n_y(, n_z)]`` (as :func:`load_image` returns).
        bbox: The mesh's bounding box ``(lo, hi)``.
        extent: ``[x0, x1, y0, y1(, z0, z1)]`` set by the user, or ``None`` / empty for the mesh
            box.
        path: The image file, for messages.

    Raises:
        ValueError: A malformed extent, or (without one) a mesh box whose aspect ratio differs
            from the image's by more than one pixel along some axis.
    """
    gdim = len(shape)
    if extent is not None and len(extent) > 0:
        if (
            isinstance(extent, str)
            or len(extent) != 2 * gdim
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in extent)
        ):
            names = "x0, x1, y0, y1" + (", z0, z1" if gdim == 3 else "")
            raise ValueError(f"image_extent must be {2 * gdim} numbers [{names}], got {extent!r}")
        box = np.asarray(extent, dtype=np.float64).reshape(gdim, 2)
        if not (np.all(np.isfinite(box)) and np.all(box[:, 0] < box[:, 1])):
            raise ValueError(f"image_extent must be finite with x0 < x1, y0 < y1, got {extent!r}")
        return box[:, 0].copy(), box[:, 1].copy()
    lo, hi = bbox
    spacing = (hi - lo) / (np.asarray(shape) - 1)
    s = float(spacing.min())
    # the box measured in pixels of the finest axis, against the image's own pixel counts
    off = np.abs((hi - lo) / s - (np.asarray(shape) - 1))
    if np.any(off > 1.0 + 1e-9):
        pixels = " x ".join(str(n) for n in (shape[0], shape[1], *shape[2:]))
        size = " x ".join(f"{v:g}" for v in hi - lo)
        raise ValueError(
            f"image {str(path)!r} has {pixels} pixels (aspect {(shape[0] - 1) / (shape[1] - 1):.4g}"
            f" between its first and last pixels) but the mesh box is {size} (aspect "
            f"{(hi[0] - lo[0]) / (hi[1] - lo[1]):.4g}); set image_extent = [x0, x1, y0, y1] to "
            "place it explicitly, or resize the image"
        )
    return lo, hi

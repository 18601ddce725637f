"""Point sets read from files (``probe``, ``holder``, ``sweep`` probing)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["read_points"]


def read_points(path: str | Path) -> npt.NDArray[np.float64]:
    """Read an ``N x d`` array of points from ``.npy`` or ``.csv``/``.txt`` (comma or blanks).

    Not collective (call it on one rank, e.g. through :func:`beckmann._mpi.on_root`).

    Raises:
        ValueError: The file is missing, has another extension, cannot be parsed, holds no
            points, or is not a two-dimensional array.
    """
    p = Path(path)
    from beckmann._resources import regular_file

    regular_file(p, "points file")
    if p.suffix not in (".npy", ".csv", ".txt"):
        raise ValueError(f"points file {str(p)!r} must be .npy or .csv")
    if p.suffix == ".npy":
        from beckmann._resources import read_npy  # header checked first: no pickle, no OOM

        pts = read_npy(p, "points file")
    else:
        try:
            text = p.read_text()
            delim = "," if "," in text else None
            with warnings.catch_warnings():  # an empty file: reported below, by its name
                warnings.simplefilter("ignore", UserWarning)
                pts = np.loadtxt(p, delimiter=delim, ndmin=2, comments="#")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"points file {str(p)!r} is not UTF-8 text (invalid byte at offset {err.start})"
            ) from err
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read points from {str(p)!r}: {err}") from err
    if not (np.issubdtype(pts.dtype, np.integer) or np.issubdtype(pts.dtype, np.floating)):
        raise ValueError(
            f"points in {str(p)!r} must be real numbers, got an array of {pts.dtype} values"
        )
    pts = np.asarray(pts, dtype=np.float64)
    if pts.size == 0:
        raise ValueError(f"points file {str(p)!r} holds no points (shape {pts.shape})")
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"points in {str(p)!r} must be finite (NaN or inf found)")
    if pts.ndim == 1:
        pts = pts.reshape(1, -1)
    if pts.ndim != 2:
        raise ValueError(f"points in {str(p)!r} must be an N x d array, got shape {pts.shape}")
    return pts

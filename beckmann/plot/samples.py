"""The samples picture: where transported samples land, as a density, beside the target.

Tens of thousands of markers pile on top of each other and hide the distribution. So the end
points are binned into a 2D histogram, scaled to a density (``counts / (N · bin area)``, the
units of p1), and drawn next to the target p1 on the same colour scale, so the two can be
compared by eye. With ``T x N x d`` paths, a few trajectories are drawn over the histogram as
thin lines; there are no start markers. A 3D run shows the (x, y) projection of the samples.
Drawn with matplotlib (the same picture for both backends); serial.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from beckmann.plot.data import RunFields

__all__ = ["MAX_PATHS", "histogram_bins", "plot_samples"]

FloatArray = npt.NDArray[np.float64]

#: At most this many trajectories are drawn over the histogram.
MAX_PATHS = 60

#: Colour map of densities (as :data:`beckmann.plot.pv.CMAP_DENSITY`).
_CMAP = "viridis"


def histogram_bins(n: int) -> int:
    """Bins per axis for ``n`` samples: about 20 samples per bin when spread evenly, 10 to 200."""
    return int(min(200, max(10, round(math.sqrt(max(n, 1) / 20.0)))))


def _triangles(data: RunFields) -> npt.NDArray[np.int64]:
    if data.cell_type == "quadrilateral":  # VTK order: split each quad in two triangles
        return np.vstack([data.cells[:, [0, 1, 2]], data.cells[:, [0, 2, 3]]])
    return data.cells


def plot_samples(data: RunFields, X: FloatArray, path: Path) -> Path:
    """Draw samples ``X`` (``T x N x 3``; the last slice are the end points) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.tri as mtri

    lo = data.points.min(axis=0)[:2]
    hi = data.points.max(axis=0)[:2]
    end = X[-1][:, :2]
    n = end.shape[0]
    bins = histogram_bins(n)
    edges = [np.linspace(lo[k], hi[k], bins + 1) for k in range(2)]
    counts, _, _ = np.histogram2d(end[:, 0], end[:, 1], bins=edges)
    area = float(np.prod((hi - lo) / bins))
    hist = counts / (n * area)
    two_d = data.gdim == 2
    p1 = data.fields["target"]
    vmax = float(max(p1.max() if two_d else 0.0, np.quantile(hist[hist > 0], 0.99) if n else 0.0))
    vmax = vmax if vmax > 0 else 1.0
    fig, axes = plt.subplots(1, 2 if two_d else 1, figsize=(9.6 if two_d else 5.2, 4.4))
    axes = np.atleast_1d(axes)
    if two_d:
        tri = mtri.Triangulation(data.points[:, 0], data.points[:, 1], _triangles(data))
        axes[0].tripcolor(tri, p1, shading="gouraud", cmap=_CMAP, vmin=0.0, vmax=vmax)
        axes[0].set_title("target p1")
    ax = axes[-1]
    im = ax.pcolormesh(edges[0], edges[1], hist.T, cmap=_CMAP, vmin=0.0, vmax=vmax)
    paths = ""
    if X.shape[0] > 1:
        keep = np.linspace(0, n - 1, min(n, MAX_PATHS)).astype(int)
        for j in keep:
            ax.plot(X[:, j, 0], X[:, j, 1], color="white", lw=0.5, alpha=0.6)
        paths = f", {keep.size} paths"
    what = "samples" if two_d else "samples, (x, y) projection"
    ax.set_title(f"{n} {what}: density of the end points{paths}", fontsize=10)
    for a in axes:
        a.set_xlim(lo[0], hi[0])
        a.set_ylim(lo[1], hi[1])
        a.set_aspect("equal")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="density")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

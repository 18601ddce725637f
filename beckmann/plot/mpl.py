"""The matplotlib fallback, where VTK cannot open an off-screen context.

Triangle plots of the 2D mesh, or of three orthogonal slices of a 3D mesh (cut by pyvista, which
needs no OpenGL for that). One PNG per field and per stored time. Serial (rank 0 only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from beckmann.plot.data import RunFields
from beckmann.plot.pv import CMAP_DENSITY, CMAP_POTENTIAL, CMAP_SPEED, make_grid
from beckmann.plot.samples import plot_samples

__all__ = ["draw_matplotlib"]

FloatArray = npt.NDArray[np.float64]


def _mpl_panels(data: RunFields) -> list[tuple[str, FloatArray, np.ndarray, dict[str, FloatArray]]]:
    """``(title, 2D points, triangles, point arrays)`` per panel: the mesh, or three slices."""
    if data.gdim == 2:
        tri = data.cells
        if data.cell_type == "quadrilateral":  # VTK order: split each quad in two triangles
            tri = np.vstack([data.cells[:, [0, 1, 2]], data.cells[:, [0, 2, 3]]])
        arrays = dict(data.fields)
        for i, (_, v) in enumerate(data.velocity):
            arrays[f"velocity_{i}"] = v
        return [("", data.points[:, :2], tri, arrays)]
    grid = make_grid(data)
    panels = []
    for ax, nm in enumerate("xyz"):
        normal = [0.0, 0.0, 0.0]
        normal[ax] = 1.0
        s = grid.slice(normal=normal, origin=grid.center).triangulate()
        keep = [i for i in range(3) if i != ax]
        faces = np.asarray(s.faces).reshape(-1, 4)[:, 1:]
        arrays = {k: np.asarray(s.point_data[k]) for k in s.point_data.keys()}
        panels.append(
            (
                f"{nm} = {grid.center[ax]:.3g}",
                np.asarray(s.points)[:, keep],
                faces,
                {**arrays, "_keep": np.array(keep)},
            )
        )
    return panels


def _mpl_figure(
    data: RunFields,
    scalar: str,
    title: str,
    cmap: str,
    path: Path,
    *,
    clim: tuple[float, float] | None = None,
    contours: bool = False,
    vectors: str | None = None,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.tri as mtri

    panels = _mpl_panels(data)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    for ax, (sub, P, tri, arrays) in zip(axes[0], panels, strict=True):
        T = mtri.Triangulation(P[:, 0], P[:, 1], tri)
        vals = arrays[scalar] if scalar in arrays else np.linalg.norm(arrays[scalar[1:-1]], axis=1)
        kw = {"vmin": clim[0], "vmax": clim[1]} if clim else {}
        im = ax.tripcolor(T, vals, shading="gouraud", cmap=cmap, **kw)
        if contours and np.ptp(vals) > 0:
            ax.tricontour(T, vals, levels=15, colors="k", linewidths=0.7)
        if vectors is not None:
            V = arrays[vectors]
            keep = arrays.get("_keep", np.array([0, 1]))
            step = max(1, P.shape[0] // 400)
            ax.quiver(
                P[::step, 0], P[::step, 1], V[::step, keep[0]], V[::step, keep[1]], color="white"
            )
        ax.set_aspect("equal")
        ax.set_title(f"{title} {sub}".strip())
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_matplotlib(data: RunFields, out: Path, samples: FloatArray | None) -> list[Path]:
    """Draw the figures of a run with matplotlib into ``out``; returns their paths."""
    lo = float(min(data.fields["source"].min(), data.fields["target"].min()))
    hi = float(max(data.fields["source"].max(), data.fields["target"].max()))
    paths = [
        _mpl_figure(data, "source", "source p0", CMAP_DENSITY, out / "source.png", clim=(lo, hi)),
        _mpl_figure(data, "target", "target p1", CMAP_DENSITY, out / "target.png", clim=(lo, hi)),
        _mpl_figure(
            data,
            "potential",
            "potential phi",
            CMAP_POTENTIAL,
            out / "potential.png",
            contours=True,
        ),
        _mpl_figure(data, "|flux|", "|F|", CMAP_SPEED, out / "flux.png", vectors="flux"),
    ]
    for i, (t, _) in enumerate(data.velocity):
        paths.append(
            _mpl_figure(
                data,
                f"|velocity_{i}|",
                f"|v| t={t:g}",
                CMAP_SPEED,
                out / f"velocity_{i}.png",
                vectors=f"velocity_{i}",
            )
        )
    if samples is not None:
        paths.append(plot_samples(data, samples, out / "samples.png"))
    return paths

"""Pictures of a run folder: PNG figures made off-screen, no display needed.

``beckmann plot DIR [--out FOLDER]`` reads the vertex (P1) fields of ``DIR/solution.xdmf`` and the
velocity time series of ``DIR/velocity.xdmf`` (XDMF parsed here, arrays read with h5py) and
writes, into ``FOLDER`` (default ``DIR/figures``):

``densities.png``
    source p0 and target p1 on one colour scale.
``potential.png``
    the potential φ with contour lines.
``flux.png``
    |F| with streamlines of the flux F = ∇φ (2D) or arrows on slices and streamlines (3D).
``velocity.png``
    |v_t| with arrows, one panel per stored time t.
``samples.png``
    transported samples, when ``DIR/samples.traj.npy`` or ``DIR/samples.npy`` exists (as
    ``beckmann sample DIR --out DIR/samples.npy [--save-every K]`` writes them) or ``--samples``
    names a file: an ``N x d`` array (end points, drawn over the target) or a ``T x N x d``
    array of paths.
``holder.png``
    moduli of continuity ω(δ) on log–log axes, for every ``{"scales": [...], "modulus": [...]}``
    found in ``DIR/holder*.json`` (as ``beckmann holder DIR --json-out DIR/holder.json`` writes
    them) or in ``--holder`` files.

3D runs are shown by three orthogonal slices through the centre of the domain.

Rendering uses pyvista (VTK) off-screen, through EGL or OSMesa. Where VTK cannot open an off-screen
context (``--backend auto`` tries one in a subprocess, since a failing context can crash the
process), the figures are drawn with matplotlib instead: triangle plots of the 2D mesh or of the
three slices of a 3D mesh. Plotting runs on rank 0 only; under ``mpirun`` the other ranks wait,
and errors reach every rank.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann.plot.holder import Modulus, find_moduli, plot_moduli

__all__ = [
    "RunFields",
    "find_moduli",
    "plot_moduli",
    "plot_run",
    "read_run_fields",
    "read_samples",
    "register_cli",
    "render_available",
]

FloatArray = npt.NDArray[np.float64]

# XDMF topology names -> (number of corner nodes, VTK cell type). Higher-order cells are drawn
# by their corners, which DOLFINx writes first.
_CELLS = {
    "triangle": (3, 5),
    "quadrilateral": (4, 9),
    "tetrahedron": (4, 10),
    "hexahedron": (8, 12),
}

_CMAP_DENSITY = "viridis"
_CMAP_POTENTIAL = "coolwarm"
_CMAP_SPEED = "magma"


# --------------------------------------------------------------------------------------------
# reading a run folder (serial, rank 0)
# --------------------------------------------------------------------------------------------
@dataclass
class RunFields:
    """The vertex fields of a run folder.

    Attributes:
        points: Vertex coordinates, ``(N, 3)`` (2D meshes padded with z = 0).
        cells: Corner vertex indices per cell, ``(M, k)``.
        cell_type: ``"triangle"``, ``"quadrilateral"``, ``"tetrahedron"`` or ``"hexahedron"``.
        gdim: Geometric dimension of the run (2 or 3).
        fields: Vertex fields by name (``source``, ``target``, ``potential``, ``flux``); vectors
            are ``(N, 3)``.
        velocity: ``(t, (N, 3) array)`` for every stored time, in time order.
    """

    points: FloatArray
    cells: npt.NDArray[np.int64]
    cell_type: str
    gdim: int
    fields: dict[str, FloatArray] = field(default_factory=dict)
    velocity: list[tuple[float, FloatArray]] = field(default_factory=list)


def _read_item(item: ET.Element, base: Path) -> np.ndarray:
    import h5py

    text = (item.text or "").strip()
    fmt = item.get("Format", "XML")
    dims = tuple(int(s) for s in item.get("Dimensions", "").split())
    if fmt == "HDF":
        fname, _, dset = text.partition(":")
        with h5py.File(base / fname, "r") as h5:
            arr = np.asarray(h5[dset][()])
    elif fmt == "XML":
        arr = np.array(text.split(), dtype=np.float64)
    else:
        raise RuntimeError(f"unsupported XDMF data format {fmt!r}")
    return arr.reshape(dims) if dims and arr.size == int(np.prod(dims)) else arr


def _read_xdmf(path: Path) -> tuple[FloatArray, np.ndarray, str, int, list[tuple[str, float, Any]]]:
    """Mesh and attributes ``(name, time, array)`` of a DOLFINx XDMF file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        raise RuntimeError(f"cannot read {str(path)!r}: {err}") from err
    base = path.parent
    topo = root.find(".//Topology")
    geom = root.find(".//Geometry")
    if topo is None or geom is None:
        raise RuntimeError(f"{str(path)!r} holds no mesh")
    name = topo.get("TopologyType", "").split("_")[0].lower()
    if name not in _CELLS:
        raise RuntimeError(f"{str(path)!r}: cell type {topo.get('TopologyType')!r} not supported")
    try:
        titem, gitem = topo.find("DataItem"), geom.find("DataItem")
        assert titem is not None and gitem is not None
        cells = _read_item(titem, base).astype(np.int64)
        x = _read_item(gitem, base).astype(np.float64)
    except (OSError, KeyError, AssertionError) as err:
        raise RuntimeError(f"cannot read the mesh of {str(path)!r}: {err}") from err
    gdim = 2 if geom.get("GeometryType", "XYZ") == "XY" else 3
    x = x.reshape(-1, gdim)
    if gdim == 3 and name in ("triangle", "quadrilateral") and np.ptp(x[:, 2]) == 0.0:
        gdim = 2
    pts = np.zeros((x.shape[0], 3))
    pts[:, : x.shape[1]] = x
    cells = cells.reshape(cells.shape[0], -1)[:, : _CELLS[name][0]]
    attrs: list[tuple[str, float, Any]] = []
    for grid in root.iter("Grid"):
        if grid.get("GridType") != "Uniform":
            continue
        tnode = grid.find("Time")
        t = float(tnode.get("Value", "0")) if tnode is not None else 0.0
        for att in grid.findall("Attribute"):
            item = att.find("DataItem")
            if item is None or att.get("Center", "Node") != "Node":
                continue
            try:
                arr = _read_item(item, base).astype(np.float64)
            except (OSError, KeyError) as err:
                raise RuntimeError(f"cannot read {att.get('Name')!r} in {str(path)!r}") from err
            arr = arr.reshape(pts.shape[0], -1)
            if arr.shape[1] == 1:
                arr = arr[:, 0]
            elif arr.shape[1] < 3:
                arr = np.hstack([arr, np.zeros((arr.shape[0], 3 - arr.shape[1]))])
            attrs.append((att.get("Name", ""), t, arr))
    return pts, cells, name, gdim, attrs


def read_run_fields(run_dir: str | Path) -> RunFields:
    """Read the vertex fields of a run folder (serial; no MPI, no DOLFINx).

    Raises:
        ValueError: ``run_dir`` has no ``solution.xdmf``.
        RuntimeError: A file of the run cannot be read.
    """
    run = Path(run_dir)
    sol = run / "solution.xdmf"
    if not sol.is_file():
        raise ValueError(
            f"{str(run)!r} is not a beckmann run folder (no solution.xdmf); "
            "create one with `beckmann solve --out DIR`"
        )
    pts, cells, ctype, gdim, attrs = _read_xdmf(sol)
    data = RunFields(pts, cells, ctype, gdim, {name: arr for name, _, arr in attrs})
    missing = [k for k in ("source", "target", "potential", "flux") if k not in data.fields]
    if missing:
        raise RuntimeError(f"{str(sol)!r} lacks the field(s) {', '.join(missing)}")
    vel = run / "velocity.xdmf"
    if vel.is_file():
        vpts, *_, vattrs = _read_xdmf(vel)
        if vpts.shape != pts.shape:
            raise RuntimeError(f"{str(vel)!r} and solution.xdmf have different meshes")
        data.velocity = sorted((t, a) for n, t, a in vattrs if n == "velocity")
    return data


def read_samples(path: str | Path, gdim: int) -> FloatArray:
    """Read transported samples: ``N x d`` points or ``T x N x d`` paths, as ``T x N x 3``.

    Raises:
        ValueError: The file is missing, unreadable or of the wrong shape.
    """
    p = Path(path)
    try:
        arr = np.asarray(np.load(p, allow_pickle=False), dtype=np.float64)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read samples from {str(p)!r}: {err}") from err
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] != gdim or arr.shape[1] == 0:
        raise ValueError(
            f"samples in {str(p)!r} must be N x {gdim} or T x N x {gdim}, got {arr.shape}"
        )
    out = np.zeros(arr.shape[:2] + (3,))
    out[..., :gdim] = arr
    return out


# --------------------------------------------------------------------------------------------
# pyvista figures
# --------------------------------------------------------------------------------------------
def render_available(timeout: float = 60.0) -> bool:
    """Whether VTK can render off-screen here (tried in a subprocess: a crash stays there)."""
    code = (
        "import pyvista as pv\n"
        "pv.OFF_SCREEN = True\n"
        "p = pv.Plotter(off_screen=True, window_size=(32, 32))\n"
        "p.add_mesh(pv.Sphere())\n"
        "img = p.screenshot(return_img=True)\n"
        "assert img.std() > 0\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            timeout=timeout,
            env={**os.environ, **_vtk_env()},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _vtk_env() -> dict[str, str]:
    # Without a display, go straight to EGL instead of failing on X first (and warning).
    if os.environ.get("DISPLAY") or "VTK_DEFAULT_OPENGL_WINDOW" in os.environ:
        return {}
    return {"VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow"}


def _grid(data: RunFields) -> Any:
    import pyvista as pv

    k, vtk_type = _CELLS[data.cell_type]
    cells = np.hstack([np.full((data.cells.shape[0], 1), k), data.cells]).ravel()
    types = np.full(data.cells.shape[0], vtk_type, dtype=np.uint8)
    grid = pv.UnstructuredGrid(cells, types, data.points)
    for name, arr in data.fields.items():
        grid.point_data[name] = arr
    grid.point_data["|flux|"] = np.linalg.norm(data.fields["flux"], axis=1)
    for i, (_, v) in enumerate(data.velocity):
        grid.point_data[f"velocity_{i}"] = v
        grid.point_data[f"|velocity_{i}|"] = np.linalg.norm(v, axis=1)
    return grid


def _slices(grid: Any) -> Any:
    """Three orthogonal slices through the centre of a 3D mesh, merged into one surface."""
    return grid.slice_orthogonal(*grid.center).combine().extract_surface().triangulate()


def _sbar(title: str) -> dict[str, Any]:
    return {
        "title": title,
        "vertical": True,
        "position_x": 0.84,
        "position_y": 0.12,
        "width": 0.1,
        "height": 0.7,
        "title_font_size": 14,
        "label_font_size": 12,
        "n_labels": 5,
        "fmt": "%.2g",
        "color": "black",
    }


def _camera(p: Any, data: RunFields) -> None:
    if data.gdim == 2:
        p.view_xy()
        p.enable_parallel_projection()
    else:
        p.view_isometric()
    p.camera.zoom(1.0 if data.gdim == 2 else 0.95)


def _arrows(grid: Any, vectors: str, data: RunFields, n: int = 18) -> Any:
    """Arrows of ``vectors`` on a regular lattice (on the slices in 3D), longest = 1/n of size."""
    import pyvista as pv

    lo, hi = np.array(grid.bounds[0::2]), np.array(grid.bounds[1::2])
    size = float(np.max(hi - lo))
    if data.gdim == 2:
        dims = np.maximum(np.round(n * (hi - lo) / size), 2).astype(int)
        xs = [np.linspace(lo[i], hi[i], dims[i] + 2)[1:-1] for i in range(2)]
        P = np.array(np.meshgrid(*xs, [lo[2]], indexing="ij")).reshape(3, -1).T
    else:
        c = np.array(grid.center)
        m = max(n // 2, 4)
        pts = []
        for ax in range(3):
            others = [i for i in range(3) if i != ax]
            a = np.linspace(lo[others[0]], hi[others[0]], m + 2)[1:-1]
            b = np.linspace(lo[others[1]], hi[others[1]], m + 2)[1:-1]
            A, B = np.meshgrid(a, b, indexing="ij")
            q = np.empty((A.size, 3))
            q[:, ax], q[:, others[0]], q[:, others[1]] = c[ax], A.ravel(), B.ravel()
            pts.append(q)
        P = np.vstack(pts)
    probe = pv.PolyData(P).sample(grid)
    ok = np.asarray(probe.point_data["vtkValidPointMask"]).astype(bool)
    probe = probe.extract_points(ok, adjacent_cells=False).cast_to_poly_points()
    if probe.n_points == 0:
        return None
    V = np.asarray(probe.point_data[vectors])
    vmax = float(np.linalg.norm(V, axis=1).max())
    if vmax == 0.0:
        return None
    probe.point_data["_v"] = V
    return probe.glyph(orient="_v", scale="_v", factor=size / n / vmax * 0.95, geom=pv.Arrow())


def _new_plotter(shape: tuple[int, int], panel: tuple[int, int]) -> Any:
    import pyvista as pv

    return pv.Plotter(
        off_screen=True,
        shape=shape,
        window_size=[panel[0] * shape[1], panel[1] * shape[0]],
        border=False,
    )


def _save(p: Any, path: Path) -> Path:
    p.set_background("white")
    p.screenshot(str(path))
    p.close()
    return path


def _surface(grid: Any, data: RunFields) -> Any:
    return grid if data.gdim == 2 else _slices(grid)


def _pv_densities(grid: Any, data: RunFields, out: Path) -> Path:
    surf = _surface(grid, data)
    lo = float(min(data.fields["source"].min(), data.fields["target"].min()))
    hi = float(max(data.fields["source"].max(), data.fields["target"].max()))
    p = _new_plotter((1, 2), (640, 500))
    for j, (name, title) in enumerate((("source", "source p0"), ("target", "target p1"))):
        p.subplot(0, j)
        p.add_text(title, font_size=12, color="black")
        p.add_mesh(
            surf.copy(),
            scalars=name,
            cmap=_CMAP_DENSITY,
            clim=(lo, hi),
            lighting=False,
            scalar_bar_args=_sbar(name),
        )
        if data.gdim == 3:
            p.add_mesh(grid.outline(), color="black")
        _camera(p, data)
    return _save(p, out / "densities.png")


def _pv_potential(grid: Any, data: RunFields, out: Path) -> Path:
    surf = _surface(grid, data)
    p = _new_plotter((1, 1), (720, 560))
    p.add_text("potential phi", font_size=12, color="black")
    p.add_mesh(
        surf,
        scalars="potential",
        cmap=_CMAP_POTENTIAL,
        lighting=False,
        scalar_bar_args=_sbar("phi"),
    )
    phi = data.fields["potential"]
    if np.ptp(phi) > 0:
        levels = np.linspace(phi.min(), phi.max(), 17)[1:-1]
        lines = surf.contour(isosurfaces=levels, scalars="potential")
        if lines.n_points:
            p.add_mesh(lines, color="black", line_width=1.5)
    if data.gdim == 3:
        p.add_mesh(grid.outline(), color="black")
    _camera(p, data)
    return _save(p, out / "potential.png")


def _pv_flux(grid: Any, data: RunFields, out: Path) -> Path:
    import pyvista as pv

    surf = _surface(grid, data)
    p = _new_plotter((1, 1), (720, 560))
    p.add_text("flux F = grad phi", font_size=12, color="black")
    p.add_mesh(
        surf,
        scalars="|flux|",
        cmap=_CMAP_SPEED,
        lighting=False,
        scalar_bar_args=_sbar("flux magnitude"),
    )
    size = float(np.max(np.ptp(data.points, axis=0)))
    if np.linalg.norm(data.fields["flux"], axis=1).max() > 0:
        if data.gdim == 2:
            lo, hi = np.array(grid.bounds[0::2]), np.array(grid.bounds[1::2])
            n = 9
            xs = [np.linspace(lo[i], hi[i], n + 2)[1:-1] for i in range(2)]
            seeds = np.array(np.meshgrid(*xs, [lo[2]], indexing="ij")).reshape(3, -1).T
            lines = grid.streamlines_from_source(
                pv.PolyData(seeds),
                vectors="flux",
                integration_direction="both",
                max_length=4.0 * size,
                initial_step_length=0.2,
                max_steps=4000,
                surface_streamlines=True,
            )
            if lines.n_points:
                p.add_mesh(lines, color="white", line_width=1.2)
            arrows = _arrows(grid, "flux", data, n=10)
            if arrows is not None:
                p.add_mesh(arrows, color="black")
        else:
            arrows = _arrows(grid, "flux", data)
            if arrows is not None:
                p.add_mesh(arrows, color="deepskyblue")
            p.add_mesh(grid.outline(), color="black")
    _camera(p, data)
    return _save(p, out / "flux.png")


def _pv_velocity(grid: Any, data: RunFields, out: Path) -> Path:
    surf = _surface(grid, data)
    picks = _pick_times(len(data.velocity))
    speeds = [grid.point_data[f"|velocity_{i}|"] for i in picks]
    hi = float(max(s.max() for s in speeds)) or 1.0
    p = _new_plotter((1, len(picks)), (560, 440))
    for j, i in enumerate(picks):
        p.subplot(0, j)
        p.add_text(f"velocity t = {data.velocity[i][0]:g}", font_size=11, color="black")
        p.add_mesh(
            surf.copy(),
            scalars=f"|velocity_{i}|",
            cmap=_CMAP_SPEED,
            clim=(0.0, hi),
            lighting=False,
            scalar_bar_args=_sbar("speed"),
        )
        arrows = _arrows(grid, f"velocity_{i}", data, n=14)
        if arrows is not None:
            p.add_mesh(arrows, color="black" if data.gdim == 2 else "deepskyblue")
        if data.gdim == 3:
            p.add_mesh(grid.outline(), color="black")
        _camera(p, data)
    return _save(p, out / "velocity.png")


def _pick_times(n: int, most: int = 4) -> list[int]:
    if n <= most:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, most)})


def _pv_samples(grid: Any, data: RunFields, X: FloatArray, out: Path) -> Path:
    import pyvista as pv

    surf = _surface(grid, data)
    p = _new_plotter((1, 1), (720, 560))
    p.add_text("samples: start (white), end (red), over p1", font_size=12, color="black")
    p.add_mesh(
        surf,
        scalars="target",
        cmap=_CMAP_DENSITY,
        opacity=0.6 if data.gdim == 3 else 1.0,
        lighting=False,
        scalar_bar_args=_sbar("p1"),
    )
    lift = np.array([0.0, 0.0, 1e-3 * float(np.max(np.ptp(data.points, axis=0)))])
    if data.gdim == 3:
        lift[:] = 0.0
        p.add_mesh(grid.outline(), color="black")
    if X.shape[0] > 1:
        keep = np.linspace(0, X.shape[1] - 1, min(X.shape[1], 150)).astype(int)
        T = X.shape[0]
        pts = (X[:, keep] + lift).transpose(1, 0, 2).reshape(-1, 3)
        conn = np.hstack([np.full((keep.size, 1), T), np.arange(keep.size * T).reshape(-1, T)])
        p.add_mesh(pv.PolyData(pts, lines=conn.ravel()), color="lightgray", line_width=1)
        p.add_mesh(
            pv.PolyData(X[0] + lift), color="white", point_size=4, render_points_as_spheres=True
        )
    p.add_mesh(pv.PolyData(X[-1] + lift), color="red", point_size=5, render_points_as_spheres=True)
    _camera(p, data)
    return _save(p, out / "samples.png")


# --------------------------------------------------------------------------------------------
# matplotlib fallback (no OpenGL): triangle plots of the 2D mesh or of the 3D slices
# --------------------------------------------------------------------------------------------
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
    grid = _grid(data)
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


def _mpl_all(data: RunFields, out: Path, samples: FloatArray | None) -> list[Path]:
    lo = float(min(data.fields["source"].min(), data.fields["target"].min()))
    hi = float(max(data.fields["source"].max(), data.fields["target"].max()))
    paths = [
        _mpl_figure(data, "source", "source p0", _CMAP_DENSITY, out / "source.png", clim=(lo, hi)),
        _mpl_figure(data, "target", "target p1", _CMAP_DENSITY, out / "target.png", clim=(lo, hi)),
        _mpl_figure(
            data,
            "potential",
            "potential phi",
            _CMAP_POTENTIAL,
            out / "potential.png",
            contours=True,
        ),
        _mpl_figure(data, "|flux|", "|F|", _CMAP_SPEED, out / "flux.png", vectors="flux"),
    ]
    for i, (t, _) in enumerate(data.velocity):
        paths.append(
            _mpl_figure(
                data,
                f"|velocity_{i}|",
                f"|v| t={t:g}",
                _CMAP_SPEED,
                out / f"velocity_{i}.png",
                vectors=f"velocity_{i}",
            )
        )
    if samples is not None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(samples[-1][:, 0], samples[-1][:, 1], s=3, c="r")
        ax.set_aspect("equal")
        ax.set_title("transported samples (x, y)")
        fig.savefig(out / "samples.png", dpi=100)
        plt.close(fig)
        paths.append(out / "samples.png")
    return paths


def _holder_files(run: Path, extra: list[str]) -> list[Path]:
    files = sorted(run.glob("holder*.json")) + sorted(run.glob("holder/*.json"))
    return files + [Path(f) for f in extra]


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def _plot_serial(
    run: Path, out: Path, samples: str | None, holder: list[str], backend: str
) -> tuple[list[Path], str]:
    data = read_run_fields(run)
    X = None
    if samples:
        X = read_samples(samples, data.gdim)
    else:
        # `beckmann sample DIR --out DIR/samples.npy --save-every K` also writes the paths
        for name in ("samples.traj.npy", "samples.npy"):
            if (run / name).is_file():
                X = read_samples(run / name, data.gdim)
                break
    moduli: list[Modulus] = []
    for f in _holder_files(run, holder):
        try:
            moduli += find_moduli(json.loads(f.read_text()), f.stem)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read Hölder results from {str(f)!r}: {err}") from err
    if holder and not moduli:
        raise ValueError(f"no 'scales'/'modulus' pairs found in {', '.join(holder)}")
    out.mkdir(parents=True, exist_ok=True)
    if backend == "auto":
        backend = "pyvista" if render_available() else "matplotlib"
    paths: list[Path] = []
    if backend == "pyvista":
        for k, v in _vtk_env().items():
            os.environ.setdefault(k, v)
        try:
            import pyvista as pv
        except ImportError as err:
            raise RuntimeError(
                "pyvista is needed: pip install pyvista (or --backend matplotlib)"
            ) from err
        pv.OFF_SCREEN = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            grid = _grid(data)
            paths += [
                _pv_densities(grid, data, out),
                _pv_potential(grid, data, out),
                _pv_flux(grid, data, out),
            ]
            if data.velocity:
                paths.append(_pv_velocity(grid, data, out))
            if X is not None:
                paths.append(_pv_samples(grid, data, X, out))
    else:
        paths += _mpl_all(data, out, X)
    if moduli:
        paths.append(plot_moduli(moduli, out / "holder.png"))
    return paths, backend


def plot_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    comm: Any = None,
    *,
    samples: str | None = None,
    holder: list[str] | None = None,
    backend: str = "auto",
) -> list[Path]:
    """Write the PNG figures of a run folder; returns their paths (on every rank).

    Collective when ``comm`` is given: rank 0 draws, the others wait, errors reach every rank.

    Args:
        run_dir: Run folder written by ``beckmann solve``.
        out: Folder for the PNGs (default ``run_dir/figures``).
        comm: MPI communicator, or ``None`` for a serial call.
        samples: ``.npy`` file of transported samples (default ``run_dir/samples.npy`` if present).
        holder: Extra JSON files with Hölder moduli (``run_dir/holder*.json`` are always read).
        backend: ``"auto"``, ``"pyvista"`` or ``"matplotlib"``.

    Raises:
        ValueError: Bad arguments or not a run folder.
        RuntimeError: A file cannot be read or the figures cannot be drawn.
    """
    if backend not in ("auto", "pyvista", "matplotlib"):
        raise ValueError(f"backend must be auto, pyvista or matplotlib, got {backend!r}")
    run = Path(run_dir)
    target = Path(out) if out is not None else run / "figures"
    rank = 0 if comm is None else comm.rank
    result: tuple[str | None, str | None, list[Path], str] = (None, None, [], backend)
    if rank == 0:
        try:
            paths, used = _plot_serial(run, target, samples, list(holder or []), backend)
            result = (None, None, paths, used)
        except ValueError as err:
            result = ("value", str(err), [], backend)
        except (RuntimeError, OSError) as err:
            result = ("runtime", str(err), [], backend)
    if comm is not None and comm.size > 1:
        result = comm.bcast(result, root=0)
    kind, msg, paths, used = result
    if kind == "value":
        raise ValueError(msg)
    if kind == "runtime":
        raise RuntimeError(msg)
    if rank == 0 and backend == "auto" and used == "matplotlib":
        sys.stderr.write("beckmann: no off-screen OpenGL for pyvista here; drew with matplotlib\n")
    return paths


def _cmd_plot(args: argparse.Namespace, comm: Any) -> int:
    paths = plot_run(
        args.dir,
        args.out,
        comm,
        samples=args.samples,
        holder=args.holder,
        backend=args.backend,
    )
    if comm.rank == 0 and not args.quiet:
        for p in paths:
            print(p)
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``beckmann plot`` to the command line."""
    p = subparsers.add_parser(
        "plot",
        help="draw PNG figures of a run folder (off-screen)",
        description="Draw densities, potential, flux, velocity (and samples, Hölder moduli "
        "where present) of a run folder as PNG files, without a display.",
    )
    p.add_argument("dir", help="run folder written by `beckmann solve`")
    p.add_argument("--out", help="folder for the PNGs (default: DIR/figures)")
    p.add_argument(
        "--samples",
        help="transported samples, .npy, N x d or T x N x d "
        "(default: DIR/samples.traj.npy or DIR/samples.npy if present)",
    )
    p.add_argument(
        "--holder",
        action="append",
        default=[],
        metavar="JSON",
        help="JSON with Hölder moduli (repeatable; DIR/holder*.json are always read)",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "pyvista", "matplotlib"),
        default="auto",
        help="renderer; auto = pyvista if off-screen OpenGL works, else matplotlib",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=_cmd_plot)

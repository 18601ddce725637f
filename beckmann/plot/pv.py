"""Figures of a run drawn with pyvista (VTK) off-screen, through EGL or OSMesa.

A 2D run is drawn on its mesh; a 3D run by three orthogonal slices through the centre of the
domain. Serial (rank 0 only).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from beckmann.plot.data import CELL_TYPES, RunFields
from beckmann.plot.samples import plot_samples

__all__ = [
    "CMAP_DENSITY",
    "CMAP_POTENTIAL",
    "CMAP_SPEED",
    "RenderProbe",
    "draw_pyvista",
    "make_grid",
    "preload_pyvista",
    "render_available",
    "vtk_env",
]

FloatArray = npt.NDArray[np.float64]

#: Colour maps of densities, of the potential (diverging: its sign matters) and of speeds.
CMAP_DENSITY = "viridis"
CMAP_POTENTIAL = "coolwarm"
CMAP_SPEED = "magma"

#: Arrows over speeds: a colour the magma map does not contain, visible on its dark and light ends.
ARROW_COLOUR = "deepskyblue"

#: Panels per row of velocity.png (one panel per stored time).
VELOCITY_COLUMNS = 5

# our cell-type name -> meshio's
_KIND = {name: kind for kind, (name, _, _) in CELL_TYPES.items()}


#: The probe: a sphere rendered off-screen by VTK itself, in the render window pyvista's
#: Plotter makes (vtkRenderWindow, off-screen, :func:`vtk_env`'s choice of window); without
#: pyvista's imports it takes half as long (1.1 s against 2.2 s here).
_PROBE = """\
import vtkmodules.vtkRenderingOpenGL2
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkFiltersSources import vtkSphereSource
from vtkmodules.vtkRenderingCore import (vtkActor, vtkPolyDataMapper, vtkRenderer,
                                         vtkRenderWindow, vtkWindowToImageFilter)
sphere = vtkSphereSource()
mapper = vtkPolyDataMapper()
mapper.SetInputConnection(sphere.GetOutputPort())
actor = vtkActor()
actor.SetMapper(mapper)
ren = vtkRenderer()
ren.AddActor(actor)
ren.SetBackground(1.0, 1.0, 1.0)
win = vtkRenderWindow()
win.SetOffScreenRendering(1)
win.AddRenderer(ren)
win.SetSize(32, 32)
win.Render()
grab = vtkWindowToImageFilter()
grab.SetInput(win)
grab.Update()
assert vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars()).std() > 0
"""


class RenderProbe:
    """Whether VTK can render off-screen here, tried in a subprocess started at construction.

    A crash stays in the subprocess. The probe takes about as long as importing pyvista, so a
    caller starts it, does its other work (reading the run, importing pyvista: nothing of that
    opens a render context) and asks :meth:`result` last. Use as a context manager, or call
    :meth:`close`, so that a probe whose answer is not needed is not left running.
    """

    def __init__(self, timeout: float = 60.0) -> None:
        self._deadline = time.monotonic() + timeout
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-c", _PROBE],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, **vtk_env()},
            )
        except OSError:
            self._proc = None

    def result(self) -> bool:
        """Wait for the probe (until the timeout): ``True`` if it rendered a picture."""
        if self._proc is None:
            return False
        try:
            return self._proc.wait(max(0.0, self._deadline - time.monotonic())) == 0
        except subprocess.TimeoutExpired:
            self.close()
            return False

    def close(self) -> None:
        """Stop the probe if it still runs."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> RenderProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def render_available(timeout: float = 60.0) -> bool:
    """Whether VTK can render off-screen here (tried in a subprocess: a crash stays there)."""
    with RenderProbe(timeout) as probe:
        return probe.result()


def preload_pyvista() -> None:
    """Import pyvista's plotting modules now (no render context), if pyvista is installed.

    The off-screen environment (:func:`vtk_env`) is set first, as :func:`draw_pyvista` does.
    """
    _use_vtk_env()
    try:
        import pyvista.plotting  # noqa: F401
    except ImportError:
        pass


def _use_vtk_env() -> None:
    """Put :func:`vtk_env` into this process's environment (a value already set is kept)."""
    for k, v in vtk_env().items():
        os.environ.setdefault(k, v)


def vtk_env() -> dict[str, str]:
    """Environment for VTK off-screen rendering (EGL when there is no display)."""
    # Without a display, go straight to EGL instead of failing on X first (and warning).
    if os.environ.get("DISPLAY") or "VTK_DEFAULT_OPENGL_WINDOW" in os.environ:
        return {}
    return {"VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow"}


def make_grid(data: RunFields) -> Any:
    """The run's mesh as a pyvista grid, with every field and velocity as point data."""
    import pyvista as pv

    k, vtk_type = CELL_TYPES[_KIND[data.cell_type]][1:]
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
            cmap=CMAP_DENSITY,
            clim=(lo, hi),
            lighting=False,
            scalar_bar_args=_sbar(name),
        )
        if data.gdim == 3:
            p.add_mesh(grid.outline(), color="black")
        _camera(p, data)
    return _save(p, out / "densities.png")


def _single_panel(grid: Any, data: RunFields, scalars: str, title: str, cmap: Any, bar: str):
    """One plotter with ``scalars`` shaded on the run's surface; returns (plotter, surface)."""
    surf = _surface(grid, data)
    p = _new_plotter((1, 1), (720, 560))
    p.add_text(title, font_size=12, color="black")
    p.add_mesh(surf, scalars=scalars, cmap=cmap, lighting=False, scalar_bar_args=_sbar(bar))
    return p, surf


def _pv_potential(grid: Any, data: RunFields, out: Path) -> Path:
    p, surf = _single_panel(grid, data, "potential", "potential phi", CMAP_POTENTIAL, "phi")
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

    p, _ = _single_panel(grid, data, "|flux|", "flux F = grad phi", CMAP_SPEED, "flux magnitude")
    size = float(np.max(np.ptp(data.points, axis=0)))
    fmax = float(grid.point_data["|flux|"].max())
    if fmax > 0:
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
                # stop where the flux all but vanishes: without it lines zig-zag at the sinks
                # until max_steps (261k points instead of 3.5k, 1.5-1.9 s instead of 0.06 s
                # for the built-in example; the picture is the same)
                terminal_speed=1e-3 * fmax,
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
    """Every stored time, each panel on its own colour scale.

    Speeds grow by orders of magnitude towards a sharp target, so one shared scale would leave
    the early panels black.
    """
    surf = _surface(grid, data)
    n = len(data.velocity)
    ncols = min(n, VELOCITY_COLUMNS)
    nrows = -(-n // ncols)
    p = _new_plotter((nrows, ncols), (560, 440))
    for i, (t, _) in enumerate(data.velocity):
        p.subplot(i // ncols, i % ncols)
        p.add_text(f"velocity t = {t:g}", font_size=11, color="black")
        speed = grid.point_data[f"|velocity_{i}|"]
        p.add_mesh(
            surf.copy(),
            scalars=f"|velocity_{i}|",
            cmap=CMAP_SPEED,
            clim=(0.0, float(speed.max()) or 1.0),
            lighting=False,
            scalar_bar_args=_sbar(f"speed at t = {t:g}"),  # one title, one bar, per panel
        )
        arrows = _arrows(grid, f"velocity_{i}", data, n=14)
        if arrows is not None:
            p.add_mesh(arrows, color=ARROW_COLOUR)
        if data.gdim == 3:
            p.add_mesh(grid.outline(), color="black")
        _camera(p, data)
    return _save(p, out / "velocity.png")


def draw_pyvista(data: RunFields, out: Path, samples: FloatArray | None) -> list[Path]:
    """Draw the figures of a run with pyvista off-screen into ``out``; returns their paths.

    Raises:
        RuntimeError: pyvista is not installed.
    """
    _use_vtk_env()
    try:
        import pyvista as pv
    except ImportError as err:
        raise RuntimeError(
            "pyvista is needed: pip install pyvista (or --backend matplotlib)"
        ) from err
    pv.OFF_SCREEN = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # VTK's chatter about contexts and empty contours
        grid = make_grid(data)
        paths = [
            _pv_densities(grid, data, out),
            _pv_potential(grid, data, out),
            _pv_flux(grid, data, out),
        ]
        if data.velocity:
            paths.append(_pv_velocity(grid, data, out))
    if samples is not None:
        paths.append(plot_samples(data, samples, out / "samples.png"))
    return paths

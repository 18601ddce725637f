"""`beckmann plot`, the pvpython script and state file, and the progress bar."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import ROOT, run_cli
from PIL import Image

from beckmann import plot
from beckmann.progress import progress

FIGURES = ("densities.png", "potential.png", "flux.png", "velocity.png")


def pixels(path):
    assert path.is_file() and path.stat().st_size > 1000, path
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def assert_picture(path):
    """Non-empty, not uniform: many colours and pixel variance."""
    img = pixels(path)
    colours = np.unique(img.reshape(-1, 3), axis=0).shape[0]
    assert colours > 10, f"{path.name}: only {colours} colours"
    assert img.var() > 0, path.name


def colour_spread(img, box):
    """Largest channel std of the pixels in ``box`` = (x0, x1, y0, y1), image fractions."""
    h, w, _ = img.shape
    x0, x1, y0, y1 = box
    return float(img[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)].std(axis=(0, 1)).max())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("plot")
    out = {}
    from mpi4py import MPI

    if MPI.COMM_WORLD.size > 1:  # the runs are only used by serial tests
        return out
    run_cli("solve", "-q", "--set", "mesh.n=8", "--out", str(base / "r2"))
    run_cli(
        "solve", "-q", "--set", "mesh.kind='unit_cube'", "--set", "mesh.n=4",
        "--out", str(base / "r3"),
    )  # fmt: skip
    return {2: base / "r2", 3: base / "r3"}


@pytest.mark.serial
@pytest.mark.parametrize("dim", [2, 3])
def test_plot_writes_pictures(runs, dim, tmp_path):
    figs = tmp_path / "figs"
    proc = run_cli("plot", str(runs[dim]), "--out", str(figs))
    listed = proc.stdout.split()
    for name in FIGURES:
        assert str(figs / name) in listed
        assert_picture(figs / name)
    # The uniform source is one colour inside the domain, the two-bump target is not: the
    # colours follow the data (checked in the middle of each panel of densities.png).
    img = pixels(figs / "densities.png")
    if dim == 2:
        source, target = (0.2, 0.3, 0.35, 0.65), (0.7, 0.8, 0.35, 0.65)
        assert colour_spread(img, source) < 1.0
        assert colour_spread(img, target) > 10.0
    assert "matplotlib" not in proc.stderr  # pyvista rendered (it can, on this machine)


@pytest.mark.serial
@pytest.mark.parametrize("dim", [2, 3])
def test_plot_matplotlib_backend(runs, dim, tmp_path):
    figs = tmp_path / "mpl"
    proc = run_cli("plot", str(runs[dim]), "--out", str(figs), "--backend", "matplotlib")
    names = [os.path.basename(p) for p in proc.stdout.split()]
    assert {"source.png", "target.png", "potential.png", "flux.png"} <= set(names)
    for name in names:
        assert_picture(figs / name)
    src, tgt = pixels(figs / "source.png"), pixels(figs / "target.png")
    if dim == 2:  # inside the plot axes: a uniform source, a structured target
        assert colour_spread(src, (0.3, 0.6, 0.3, 0.7)) < 1.0
        assert colour_spread(tgt, (0.3, 0.6, 0.3, 0.7)) > 10.0


def domain_box(img, right=0.8):
    """Pixel rows and columns ``(r0, r1, c0, c1)`` of the coloured domain left of the colour bar.

    A pixel is coloured when its channels differ by more than 40 (white, black and grey are
    not); the domain is the span of the rows and columns that are mostly coloured.
    """
    h, w, _ = img.shape
    sat = (img.max(axis=2) - img.min(axis=2))[:, : int(right * w)] > 40
    rows = np.flatnonzero(sat.mean(axis=1) > 0.3)
    cols = np.flatnonzero(sat.mean(axis=0) > 0.3)
    return rows[0], rows[-1], cols[0], cols[-1]


def read_colours(img, cmap, vmin, vmax, u, v, right_limit=0.8):
    """Values of a picture at domain fractions ``(u, v)`` (y up), by inverting the colour map.

    Returns the values and a mask of the pixels whose colour lies on the map (not on a contour
    line, an arrow or anti-aliased between them).
    """
    import matplotlib

    lut = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0
    r0, r1, c0, c1 = domain_box(img, right_limit)
    rows = np.round(r1 - v * (r1 - r0)).astype(int)
    cols = np.round(c0 + u * (c1 - c0)).astype(int)
    rgb = img[rows, cols]
    dist = np.linalg.norm(rgb[:, None, :] - lut[None, :, :], axis=2)
    index = dist.argmin(axis=1)
    return vmin + index / 255.0 * (vmax - vmin), dist.min(axis=1) < 12.0


@pytest.mark.parametrize("backend", ["pyvista", "matplotlib"])
def test_pictures_show_the_exact_fields(comm, mpi_tmp_path, backend):
    """The colours of potential.png and of the target's picture, read back through the colour
    map, are the exact φ and p1.

    p0 = 1, p1 = 1 + 0.5 cos(πx) + 0.2 cos(πy) gives φ = (0.5 cos πx + 0.2 cos πy) / π²
    (Δφ = p0 − p1, ∂φ/∂n = 0, mean zero). The fields have no symmetry of the square, so a
    flipped, transposed or sign-reversed picture fails (by 28 % of the range or more; the
    pictures are right to 0.5 %), as does one drawn from the wrong field.
    """
    from beckmann import config, pipeline

    if backend == "pyvista" and not plot.render_available():
        pytest.skip("VTK cannot render off-screen here")
    expr = "1 + 0.5*cos(pi*x) + 0.2*cos(pi*y)"
    cfg = config.resolve(
        None, ["mesh.n=16", "target.kind='expression'", f"target.expr='{expr}'"],
        base=pipeline.BUILTIN_EXAMPLE,
    )  # fmt: skip
    pipeline.run(cfg, comm, out=mpi_tmp_path / "run")
    paths = {p.name: p for p in plot.plot_run(mpi_tmp_path / "run", comm=comm, backend=backend)}
    if comm.rank != 0:
        return
    fields = plot.read_run_fields(mpi_tmp_path / "run").fields
    u, v = (g.ravel() for g in np.meshgrid(*2 * [np.linspace(0.04, 0.96, 24)]))
    cu, cv = np.cos(np.pi * u), np.cos(np.pi * v)
    phi = fields["potential"]
    seen, ok = read_colours(pixels(paths["potential.png"]), "coolwarm", phi.min(), phi.max(), u, v)
    exact = (0.5 * cu + 0.2 * cv) / np.pi**2
    assert ok.sum() > 0.7 * ok.size, f"only {ok.sum()} of {ok.size} pixels on the colour map"
    err = np.abs(seen - exact)[ok]
    assert np.quantile(err, 0.95) < 0.015 * np.ptp(exact), np.quantile(err, 0.95) / np.ptp(exact)
    # the signs near the corners: + at x small, - at x large
    for (pu, pv), sign in {(0.1, 0.1): 1, (0.1, 0.9): 1, (0.9, 0.1): -1, (0.9, 0.9): -1}.items():
        near = ok & (np.hypot(u - pu, v - pv) < 0.08)
        assert near.any() and np.all(np.sign(seen[near]) == sign), (pu, pv)
    # the target, on the colour scale shared with the source (the right panel of densities.png)
    lo = min(fields["source"].min(), fields["target"].min())
    hi = max(fields["source"].max(), fields["target"].max())
    if backend == "pyvista":
        img = pixels(paths["densities.png"])
        img = img[:, img.shape[1] // 2 :]
    else:
        img = pixels(paths["target.png"])
    seen, ok = read_colours(img, "viridis", lo, hi, u, v)
    exact = 1 + 0.5 * cu + 0.2 * cv
    assert ok.sum() > 0.7 * ok.size
    err = np.abs(seen - exact)[ok]
    assert np.quantile(err, 0.95) < 0.015 * np.ptp(exact), np.quantile(err, 0.95) / np.ptp(exact)


def panels(img, min_width=20):
    """Column spans ``(c0, c1)`` of the coloured panels of a one-row picture, left to right."""
    sat = (img.max(axis=2) - img.min(axis=2)) > 40
    cols = sat.mean(axis=0) > 0.2
    edges = np.flatnonzero(np.diff(np.r_[0, cols.astype(int), 0]))
    spans = list(zip(edges[::2], edges[1::2] - 1, strict=True))
    return [(a, b) for a, b in spans if b - a >= min_width]


LOW_BACKGROUND = "0.02 + exp(-((x - a)**2 + (y - a)**2) / s) + exp(-((x - b)**2 + (y - b)**2) / s)"


@pytest.mark.parametrize("backend", ["pyvista", "matplotlib"])
def test_velocity_every_time_on_its_own_scale(comm, mpi_tmp_path, backend):
    """Five stored times give five velocity panels, each reaching the top of its colour map.

    On one scale shared by all times the early panels stay dark (the speed at t = 1 is about
    four times that at t = 0 on this target with a low background); per time, every panel uses
    the whole map.
    """
    import matplotlib

    from beckmann import config, pipeline

    if backend == "pyvista" and not plot.render_available():
        pytest.skip("VTK cannot render off-screen here")
    times = [0.0, 0.25, 0.5, 0.75, 1.0]
    cfg = config.resolve(
        None, ["mesh.n=12", f"output.times={times}", f"target.expr='{LOW_BACKGROUND}'"],
        base=pipeline.BUILTIN_EXAMPLE,
    )  # fmt: skip
    pipeline.run(cfg, comm, out=mpi_tmp_path / "run")
    paths = plot.plot_run(mpi_tmp_path / "run", comm=comm, backend=backend)
    if comm.rank != 0:
        return
    data = plot.read_run_fields(mpi_tmp_path / "run")
    assert [t for t, _ in data.velocity] == times
    top = matplotlib.colormaps["magma"](np.linspace(0.9, 1.0, 26))[:, :3] * 255.0
    if backend == "pyvista":
        (png,) = [p for p in paths if p.name == "velocity.png"]
        img = pixels(png)
        width = img.shape[1] // len(times)
        pictures = [img[:, i * width : (i + 1) * width] for i in range(len(times))]
        # five panels, each with its mesh and its own (narrow) colour bar
        assert len(panels(img)) == len(times), panels(img)
        assert len(panels(img, min_width=3)) == 2 * len(times), panels(img, min_width=3)
    else:
        names = sorted(p.name for p in paths if p.name.startswith("velocity_"))
        assert names == [f"velocity_{i}.png" for i in range(len(times))]
        pictures = [pixels(paths[0].parent / name) for name in names]
    speeds = [np.linalg.norm(v, axis=1).max() for _, v in data.velocity]
    assert max(speeds) > 2.5 * min(speeds)  # a shared scale would darken some panels
    for i, img in enumerate(pictures):
        r0, r1, c0, c1 = domain_box(img)
        inside = img[r0 : r1 + 1, c0 : c1 + 1].reshape(-1, 3)
        near_top = np.linalg.norm(inside[:, None] - top[None], axis=2).min(axis=1) < 12.0
        assert near_top.sum() >= 5, f"panel t={times[i]} never reaches the top of its scale"


@pytest.mark.parametrize("backend", ["pyvista", "matplotlib"])
def test_samples_picture_is_a_density(comm, mpi_tmp_path, backend):
    """End points uniform on [0.35, 0.65]² show as density 1/0.09 there and 0 elsewhere."""
    from beckmann import config, pipeline

    if backend == "pyvista" and not plot.render_available():
        pytest.skip("VTK cannot render off-screen here")
    cfg = config.resolve(None, ["mesh.n=8"], base=pipeline.BUILTIN_EXAMPLE)
    pipeline.run(cfg, comm, out=mpi_tmp_path / "run")
    rng = np.random.default_rng(2)
    end = 0.35 + 0.3 * rng.random((20000, 2))
    if comm.rank == 0:
        np.save(mpi_tmp_path / "run" / "samples.npy", end)  # end points only
    comm.barrier()
    paths = plot.plot_run(mpi_tmp_path / "run", comm=comm, backend=backend)
    if comm.rank != 0:
        return
    (png,) = [p for p in paths if p.name == "samples.png"]
    img = pixels(png)
    spans = panels(img)
    assert len(spans) == 2, spans  # p1 and the samples' histogram (the colour bar is narrow)
    right = img[:, spans[1][0] - 2 : spans[1][1] + 3]
    fields = plot.read_run_fields(mpi_tmp_path / "run").fields
    # the shared colour scale runs from 0 to the 99th percentile of the histogram (about 1/0.09)
    n_bins = plot.histogram_bins(end.shape[0])
    counts, _, _ = np.histogram2d(*end.T, bins=n_bins, range=[[0, 1], [0, 1]])
    hist = counts / (end.shape[0] / n_bins**2)
    vmax = max(fields["target"].max(), np.quantile(hist[hist > 0], 0.99))
    u = np.array([0.45, 0.55, 0.5, 0.1, 0.9, 0.1, 0.9])
    v = np.array([0.45, 0.55, 0.5, 0.1, 0.9, 0.9, 0.1])
    seen, ok = read_colours(right, "viridis", 0.0, vmax, u, v, right_limit=1.0)
    assert ok.all()
    np.testing.assert_allclose(seen[:3], 1 / 0.09, rtol=0.25)
    np.testing.assert_allclose(seen[3:], 0.0, atol=0.02 * vmax)


@pytest.mark.serial
def test_plot_samples_and_holder_under_mpi(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs[2], run)
    rng = np.random.default_rng(1)
    X0 = rng.random((200, 2))
    t = np.linspace(0.0, 1.0, 6)[:, None, None]
    np.save(run / "samples.traj.npy", (1 - t) * X0 + t * (0.5 + 0.3 * (X0 - 0.5)))
    scales = np.geomspace(0.05, 0.4, 6)
    (run / "holder.json").write_text(
        json.dumps({"field": "potential", "scales": scales.tolist(),
                    "modulus": (0.1 * scales**0.8).tolist(), "exponent": {"estimate": 0.8}})
    )  # fmt: skip
    proc = run_cli("plot", str(run), ranks=2)
    names = [os.path.basename(p) for p in proc.stdout.split()]
    assert names.count("samples.png") == 1 and names.count("holder.png") == 1  # rank 0 prints
    for name in ("samples.png", "holder.png"):
        assert_picture(run / "figures" / name)


SWEEP = """
[mesh]
kind = "unit_square"
n = 12
[solver]
degree = 1
method = "mumps"
[target]
kind = "expression"
expr = "0.2 + exp(-((x - c)**2 + (y - 0.5)**2) / 0.02)"
[sweep.parameters]
c = [0.3, 0.5, 0.7]
"""


@pytest.mark.serial
def test_plot_a_sweep_member(tmp_path):
    """`plot STORE --param c=0.7` draws that member: its target peaks at (0.7, 0.5), and its
    potential is the one `solve` computes at c = 0.7."""
    (tmp_path / "sweep.toml").write_text(SWEEP)
    store = tmp_path / "store"
    run_cli("sweep", str(tmp_path / "sweep.toml"), "--out", str(store))
    proc = run_cli("plot", str(store), "--param", "c=0.7", "--backend", "matplotlib", ranks=2)
    figs = store / "figures" / "c=0.7"
    assert str(figs / "target.png") in proc.stdout.split()
    u, v = (g.ravel() for g in np.meshgrid(*2 * [np.linspace(0.04, 0.96, 24)]))
    seen, ok = read_colours(pixels(figs / "target.png"), "viridis", 0.0, 1.0, u, v)
    assert ok.mean() > 0.9
    peak = np.argmax(np.where(ok, seen, -np.inf))
    assert np.hypot(u[peak] - 0.7, v[peak] - 0.5) < 0.06
    # the same member solved directly: its potential, read back from the member's picture
    (tmp_path / "one.toml").write_text(SWEEP.split("[sweep.parameters]")[0])
    run_cli("solve", "-q", str(tmp_path / "one.toml"), "--set", "target.params={c = 0.7}",
            "--out", str(tmp_path / "direct"))  # fmt: skip
    phi = plot.read_run_fields(tmp_path / "direct").fields["potential"]
    from scipy.interpolate import LinearNDInterpolator

    pts = plot.read_run_fields(tmp_path / "direct").points[:, :2]
    exact = LinearNDInterpolator(pts, phi)(u, v)
    seen, ok = read_colours(pixels(figs / "potential.png"), "coolwarm", phi.min(), phi.max(), u, v)
    assert ok.mean() > 0.7
    assert np.quantile(np.abs(seen - exact)[ok], 0.95) < 0.02 * np.ptp(phi)
    bad = run_cli("plot", str(store), "--param", "c=0.6", check=False)
    assert bad.returncode == 2 and "not a grid point" in bad.stderr
    bare = run_cli("plot", str(store), check=False)
    assert bare.returncode == 2 and "--param" in bare.stderr


@pytest.mark.serial
def test_plot_bad_folder_is_one_line_error(tmp_path):
    proc = run_cli("plot", str(tmp_path / "nothing"), check=False, ranks=2)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a beckmann run folder" in lines[0]


@pytest.mark.serial
def test_render_probe_answers_stops_and_decides_the_backend(runs, tmp_path, monkeypatch):
    """The VTK probe agrees with pyvista's own off-screen render; a failing probe means
    matplotlib; one past its timeout is killed; an error in the caller kills it."""
    import sys

    import beckmann.plot.pv as pv_module
    import beckmann.plot.run as run_module

    by_pyvista = subprocess.run(
        [sys.executable, "-c", "import pyvista as pv\n"
         "p = pv.Plotter(off_screen=True, window_size=(32, 32))\n"
         "p.add_mesh(pv.Sphere())\n"
         "assert p.screenshot(return_img=True).std() > 0\n"],
        env={**os.environ, **pv_module.vtk_env()}, capture_output=True, timeout=120,
    ).returncode == 0
    assert pv_module.render_available() is by_pyvista

    monkeypatch.setattr(pv_module, "_PROBE", "raise SystemExit(3)")
    assert pv_module.render_available() is False
    monkeypatch.setattr(pv_module, "_PROBE", "pass")
    assert pv_module.render_available() is True
    monkeypatch.setattr(pv_module, "_PROBE", "import time; time.sleep(60)")
    probe = pv_module.RenderProbe(timeout=0.5)
    assert probe.result() is False and probe._proc.poll() is not None  # killed, reaped

    made = []

    class Recorder(pv_module.RenderProbe):
        def __init__(self, timeout: float = 60.0) -> None:
            super().__init__(timeout)
            made.append(self)

    monkeypatch.setattr(run_module, "RenderProbe", Recorder)
    with pytest.raises(ValueError, match="not a beckmann run folder"):
        plot.draw_run(tmp_path / "missing", tmp_path / "fig")
    assert made and made[-1]._proc.poll() is not None  # not left running
    monkeypatch.setattr(pv_module, "_PROBE", "raise SystemExit(1)")
    paths, backend = plot.draw_run(runs[2], tmp_path / "fig")
    assert backend == "matplotlib" and len(made) == 2
    for path in paths:
        assert_picture(path)


def test_plot_run_errors_are_collective(comm, mpi_tmp_path):
    with pytest.raises(ValueError, match="not a beckmann run folder"):
        plot.plot_run(mpi_tmp_path / "missing", comm=comm)
    a_file = mpi_tmp_path / "a_file"
    if comm.rank == 0:
        a_file.write_text("x")
    comm.barrier()
    with pytest.raises(ValueError, match="exists and is not a folder"):
        plot.plot_run(mpi_tmp_path / "missing", a_file, comm=comm)
    with pytest.raises(ValueError, match="backend"):
        plot.plot_run(mpi_tmp_path, comm=comm, backend="opengl")


@pytest.mark.serial
def test_plot_refuses_another_beckmann_folder_as_out(runs, tmp_path):
    before = sorted(p.name for p in runs[3].iterdir())
    with pytest.raises(ValueError, match=r"is a beckmann run folder; figures go into"):
        plot.plot_run(runs[2], runs[3])
    assert sorted(p.name for p in runs[3].iterdir()) == before


def test_find_moduli_and_samples(tmp_path):
    doc = {
        "runs": [
            {"field": "flux", "time": 0.5, "scales": [0.1, 0.2], "modulus": [1.0, 2.0],
             "exponent": {"estimate": 1.0}},
            {"field": "potential", "scales": [0.1, 0.2, 0.4], "modulus": [1, 1, 1]},
        ],
        "config": {"scales": [1, 2], "modulus": [3, 4]},
    }  # fmt: skip
    found = plot.find_moduli(doc)
    assert [f[0] for f in found] == ["flux t=0.5", "potential"]
    assert found[0][3] == 1.0 and np.isnan(found[1][3])
    np.save(tmp_path / "a.npy", np.ones((5, 2)))
    assert plot.read_samples(tmp_path / "a.npy", 2).shape == (1, 5, 3)
    with pytest.raises(ValueError, match="N x 3"):
        plot.read_samples(tmp_path / "a.npy", 3)


def test_read_run_fields_matches_the_checkpoint(comm, mpi_tmp_path):
    """The XDMF reader of `plot` agrees with the solver's own solution at the vertices."""
    from beckmann import config, pipeline
    from beckmann import store as io

    cfg = config.resolve(None, ["mesh.n=6"], base=pipeline.BUILTIN_EXAMPLE)
    sol = pipeline.run(cfg, comm, out=mpi_tmp_path / "run")
    if comm.rank == 0:
        data = plot.read_run_fields(mpi_tmp_path / "run")
        assert data.gdim == 2 and data.cell_type == "triangle"
        assert [t for t, _ in data.velocity] == [0.0, 0.5, 1.0]
        pts = data.points[:, :2]
    else:
        pts = None
    pts = comm.bcast(pts, root=0)
    ref = io.load_run(mpi_tmp_path / "run", comm).evaluate(pts, t=0.5)
    del sol
    if comm.rank == 0:
        np.testing.assert_allclose(data.fields["potential"], ref["potential"], atol=1e-10)
        # the XDMF velocity is the vertex average of a discontinuous field: close, not equal
        v = dict(data.velocity)[0.5][:, :2]
        err = np.linalg.norm(v - ref["velocity"], axis=1).mean()
        assert err < 0.1 * np.linalg.norm(v, axis=1).max()


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class Rank:
    def __init__(self, rank):
        self.rank = rank


def test_progress_only_on_a_terminal_on_rank_0(monkeypatch):
    monkeypatch.delenv("BECKMANN_NO_PROGRESS", raising=False)
    tty, pipe, other = FakeTTY(), io.StringIO(), FakeTTY()
    for stream, comm in ((tty, Rank(0)), (pipe, Rank(0)), (other, Rank(1))):
        with progress(4, "work", comm, stream=stream) as bar:
            for _ in range(4):
                bar.update()
    assert "work" in tty.getvalue() and "4/4" in tty.getvalue()
    assert tty.getvalue().endswith("\n")
    assert pipe.getvalue() == "" and other.getvalue() == ""
    monkeypatch.setenv("BECKMANN_NO_PROGRESS", "1")
    quiet = FakeTTY()
    with progress(None, "x", None, stream=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == "" and bar.n == 3


def pvpython_cmd():
    """The command that runs pvpython here; skips only where ParaView is not installed.

    Where ``pvpython`` is present the ParaView tests must run (CI installs Debian's
    ``paraview python3-paraview xvfb xauth``): a missing display server is then a failure.
    """
    exe = shutil.which("pvpython")
    if exe is None:
        pytest.skip("pvpython (ParaView) is not installed (apt install paraview python3-paraview "
                    "xvfb xauth)")  # fmt: skip
    if os.environ.get("DISPLAY"):
        return [exe]
    xvfb = shutil.which("xvfb-run")
    assert xvfb is not None, "pvpython is installed but there is no DISPLAY and no xvfb-run"
    return [xvfb, "-a", "-s", "-screen 0 1600x1200x24", exe]


def assert_paraview_view(path):
    """The view is drawn, not black: a white background and both ends of "Cool to Warm"."""
    assert_picture(path)
    img = pixels(path)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    assert np.mean(img.sum(axis=-1) < 60) < 0.2, "mostly black"
    assert np.mean(img.min(axis=-1) > 245) > 0.1, "no white background"
    assert np.mean((r > b + 60) & (r > g + 40)) > 0.005, "no warm (red) end of the colour map"
    assert np.mean((b > r + 60) & (b > g + 20)) > 0.005, "no cool (blue) end of the colour map"


def _run_pv(args, tries=3):
    """Run pvpython; Xvfb sometimes is not accepting connections yet: retry on that only."""
    for _ in range(tries):
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if "bad X server connection" not in proc.stderr:
            break
    return proc


@pytest.mark.serial
@pytest.mark.parametrize("dim", [2, 3])
def test_paraview_script(runs, dim, tmp_path):
    cmd = pvpython_cmd()
    png = tmp_path / "view.png"
    script = str(ROOT / "scripts" / "paraview_view.py")
    proc = _run_pv([*cmd, script, str(runs[dim]), "--out", str(png), "--size", "600", "450"])
    assert proc.returncode == 0 and png.is_file(), proc.stdout + proc.stderr
    assert_paraview_view(png)


@pytest.mark.serial
def test_paraview_state_file(runs, tmp_path):
    cmd = pvpython_cmd()
    png = tmp_path / "state.png"
    code = tmp_path / "load.py"
    code.write_text(
        "import sys\n"
        "from paraview.simple import GetActiveView, LoadState, SaveScreenshot\n"
        "LoadState(sys.argv[1], LoadStateDataFileOptions='Search files under specified "
        "directory', DataDirectory=sys.argv[2])\n"
        "SaveScreenshot(sys.argv[3], GetActiveView(), ImageResolution=[500, 400])\n"
        "import os\n"
        "os._exit(0)  # skip the OpenGL teardown that fails under Xvfb (see paraview_view.py)\n"
    )
    state = str(ROOT / "scripts" / "beckmann_view.pvsm")
    proc = _run_pv([*cmd, str(code), state, str(runs[2]), str(png)])
    assert proc.returncode == 0 and png.is_file(), proc.stdout + proc.stderr
    assert_paraview_view(png)

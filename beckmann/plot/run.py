"""``plot_run``: every picture of a run folder, drawn on rank 0.

Reads the run (:mod:`~beckmann.plot.data`), any transported samples and Hölder results found
beside it, and draws with pyvista (:mod:`~beckmann.plot.pv`) or, where VTK cannot render
off-screen, with matplotlib (:mod:`~beckmann.plot.mpl`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from beckmann._mpi import on_root
from beckmann.plot.data import read_run_fields, read_samples
from beckmann.plot.holder import Modulus, find_moduli, plot_moduli
from beckmann.plot.mpl import draw_matplotlib
from beckmann.plot.pv import draw_pyvista, render_available

__all__ = ["BACKENDS", "draw_run", "plot_run", "render_run"]

#: Renderers: ``auto`` = pyvista where off-screen OpenGL works, else matplotlib.
BACKENDS = ("auto", "pyvista", "matplotlib")

#: Sample files ``plot`` looks for in a run folder (``beckmann sample DIR --out
#: DIR/samples.npy --save-every K`` also writes the paths).
SAMPLE_FILES = ("samples.traj.npy", "samples.npy")


def _holder_files(run: Path, extra: list[str]) -> list[Path]:
    files = sorted(run.glob("holder*.json")) + sorted(run.glob("holder/*.json"))
    return files + [Path(f) for f in extra]


def draw_run(
    run: str | Path,
    out: str | Path,
    *,
    samples: str | Path | None = None,
    holder: list[str] | None = None,
    backend: str = "auto",
) -> tuple[list[Path], str]:
    """Draw the figures of a run folder into ``out``; serial (no MPI).

    Returns:
        The PNG paths and the backend used (``auto`` resolved).

    Raises:
        ValueError: Bad arguments, not a run folder, or unreadable samples / Hölder files.
        RuntimeError: A file of the run cannot be read or the figures cannot be drawn.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be auto, pyvista or matplotlib, got {backend!r}")
    run, out = Path(run), Path(out)
    data = read_run_fields(run)
    X = None
    if samples:
        X = read_samples(samples, data.gdim)
    else:
        found = [run / name for name in SAMPLE_FILES if (run / name).is_file()]
        X = read_samples(found[0], data.gdim) if found else None
    moduli: list[Modulus] = []
    for f in _holder_files(run, list(holder or [])):
        try:
            moduli += find_moduli(json.loads(f.read_text()), f.stem)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read Hölder results from {str(f)!r}: {err}") from err
    if holder and not moduli:
        raise ValueError(f"no 'scales'/'modulus' pairs found in {', '.join(holder)}")
    out.mkdir(parents=True, exist_ok=True)
    if backend == "auto":
        backend = "pyvista" if render_available() else "matplotlib"
    if backend == "pyvista":
        paths = draw_pyvista(data, out, X)
    else:
        paths = draw_matplotlib(data, out, X)
    if moduli:
        paths.append(plot_moduli(moduli, out / "holder.png"))
    return paths, backend


def render_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    comm: Any = None,
    *,
    samples: str | Path | None = None,
    holder: list[str] | None = None,
    backend: str = "auto",
) -> tuple[list[Path], str]:
    """:func:`draw_run` on rank 0, its result (or error) on every rank.

    Collective when ``comm`` is given: rank 0 draws, the others wait, errors reach every rank
    (:func:`beckmann._mpi.on_root`). ``out`` defaults to ``run_dir/figures``.
    """
    target = Path(out) if out is not None else Path(run_dir) / "figures"

    def draw() -> tuple[list[Path], str]:
        return draw_run(run_dir, target, samples=samples, holder=holder, backend=backend)

    if comm is None or comm.size == 1:
        return draw()
    return on_root(comm, draw)


def plot_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    comm: Any = None,
    *,
    samples: str | Path | None = None,
    holder: list[str] | None = None,
    backend: str = "auto",
) -> list[Path]:
    """Write the PNG figures of a run folder; returns their paths (on every rank).

    Collective when ``comm`` is given: rank 0 draws, the others wait, errors reach every rank.

    Args:
        run_dir: Run folder written by ``beckmann solve``.
        out: Folder for the PNGs (default ``run_dir/figures``).
        comm: MPI communicator, or ``None`` for a serial call.
        samples: ``.npy`` file of transported samples (default ``run_dir/samples.traj.npy`` or
            ``run_dir/samples.npy`` if present).
        holder: Extra JSON files with Hölder moduli (``run_dir/holder*.json`` are always read).
        backend: ``"auto"``, ``"pyvista"`` or ``"matplotlib"``.

    Raises:
        ValueError: Bad arguments or not a run folder.
        RuntimeError: A file cannot be read or the figures cannot be drawn.
    """
    paths, _ = render_run(run_dir, out, comm, samples=samples, holder=holder, backend=backend)
    return paths

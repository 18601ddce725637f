"""``plot_run``: every picture of a run folder, drawn on rank 0.

Reads the run (:mod:`~beckmann.plot.data`), any transported samples and Hölder results found
beside it, and draws with pyvista (:mod:`~beckmann.plot.pv`) or, where VTK cannot render
off-screen, with matplotlib (:mod:`~beckmann.plot.mpl`).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from beckmann._mpi import on_root
from beckmann.plot.data import read_run_fields, read_samples
from beckmann.plot.holder import Modulus, find_moduli, plot_moduli
from beckmann.plot.mpl import draw_matplotlib
from beckmann.plot.pv import RenderProbe, draw_pyvista, preload_pyvista
from beckmann.store.folder import folder_kind

__all__ = ["BACKENDS", "draw_run", "plot_run", "render_run"]

#: Renderers: ``auto`` = pyvista where off-screen OpenGL works, else matplotlib.
BACKENDS = ("auto", "pyvista", "matplotlib")

#: Sample files ``plot`` looks for in a run folder (``beckmann sample DIR --out
#: DIR/samples.npy --save-every K`` also writes the paths).
SAMPLE_FILES = ("samples.traj.npy", "samples.npy")


#: What a Hölder results file must be, said in every message about one.
HOLDER_EXPECTED = "expected the JSON that `beckmann holder --json-out` writes"


def _holder_files(run: Path, extra: list[str]) -> list[tuple[Path, str]]:
    """Hölder JSON files to draw, each with how messages name it."""
    files = sorted(run.glob("holder*.json")) + sorted(run.glob("holder/*.json"))
    return [(f, "Hölder results") for f in files] + [(Path(f), "--holder file") for f in extra]


def read_moduli(path: Path, what: str) -> list[Modulus]:
    """The moduli in one Hölder JSON file (serial).

    The file must be a regular file of bounded size (no FIFO, device or folder) holding UTF-8
    JSON; anything else is a ``ValueError`` naming ``what``, the file and what was expected.
    """
    from beckmann._resources import regular_file

    p = regular_file(path, what, max_bytes=256 * 1024**2)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {str(p)!r} is not UTF-8 text; {HOLDER_EXPECTED}") from None
    except OSError as err:
        raise ValueError(f"cannot read {what} {str(p)!r}: {err.strerror}") from err
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {str(p)!r} is not JSON ({err}); {HOLDER_EXPECTED}") from None
    except RecursionError:
        raise ValueError(f"{what} {str(p)!r} is nested too deeply; {HOLDER_EXPECTED}") from None
    return find_moduli(obj, p.stem)


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
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder (the figures' folder)")
    kind = folder_kind(out)
    if kind is not None:  # its contents are what its manifest says: no foreign PNGs
        raise ValueError(
            f"--out {str(out)!r} is a beckmann {kind} folder; figures go into "
            "a folder of their own (default: the run's figures/)"
        )
    # the render probe runs while the run is read and pyvista imported (about 2 s each)
    with RenderProbe() if backend == "auto" else nullcontext() as probe:
        data = read_run_fields(run)
        X = None
        if samples:
            X = read_samples(samples, data.gdim, "--samples file")
        else:
            found = [run / name for name in SAMPLE_FILES if (run / name).is_file()]
            X = read_samples(found[0], data.gdim) if found else None
        moduli: list[Modulus] = []
        for f, what in _holder_files(run, list(holder or [])):
            moduli += read_moduli(f, what)
        if holder and not moduli:
            raise ValueError(
                f"--holder: no 'scales'/'modulus' pairs found in {', '.join(holder)}; "
                f"{HOLDER_EXPECTED}"
            )
        out.mkdir(parents=True, exist_ok=True)
        if probe is not None:
            preload_pyvista()
            backend = "pyvista" if probe.result() else "matplotlib"
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

"""Run-folder output: ParaView files, the rank-count-independent checkpoint, ``summary.json``.

A run folder holds::

    summary.json        scalars, timings, version and the full resolved config
    config.toml         the resolved config, re-runnable with ``beckmann solve config.toml``
    solution.xdmf/.h5   source, target, potential, flux at the mesh vertices (ParaView 5.11)
    velocity.xdmf/.h5   velocity at each requested time (XDMF time series)
    pvd/*.pvd           the same fields in their native spaces (P_k, DG_{k-1}, DG_k)
    checkpoint/         mesh.xdmf/.h5 + fields.h5: reloads on any number of ranks

XDMF only holds Lagrange functions of the mesh's degree (P1 here), so higher-degree and
discontinuous fields are averaged to the vertices there; the PVD files keep them exactly.

The checkpoint stores every field of the Lagrange space by the *coordinates* of its degrees of
freedom (unique for a continuous scalar Lagrange space) gathered on rank 0 and written with serial
h5py. Reloading reads the mesh from XDMF on any number of ranks, tabulates the new distribution's
dof coordinates and matches them with a k-d tree, so nothing depends on the partition that wrote it.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from beckmann._dolfinx import MPI, dolfinx, fem, la
from beckmann.fields import Solution

__all__ = [
    "CHECKPOINT_VERSION",
    "load_run",
    "read_checkpoint",
    "to_vertex_function",
    "write_checkpoint",
    "write_json",
    "write_paraview",
]

CHECKPOINT_VERSION = 1
_FIELDS = ("potential", "source", "target")


def to_vertex_function(u: fem.Function, name: str | None = None) -> fem.Function:
    """Represent ``u`` in the vertex Lagrange space (P1) of its mesh, for XDMF output.

    Continuous Lagrange fields are interpolated (exact at the vertices); discontinuous ones are
    averaged over the cells around each vertex. Collective.
    """
    msh = u.function_space.mesh
    shape = u.ufl_shape
    Q = fem.functionspace(msh, ("Lagrange", 1, shape))
    q = fem.Function(Q, name=name or u.name)
    el = u.function_space.ufl_element()
    if not el.discontinuous:
        q.interpolate(u)
        return q
    bs = Q.dofmap.bs
    tdim = msh.topology.dim
    ncells = msh.topology.index_map(tdim).size_local + msh.topology.index_map(tdim).num_ghosts
    cells = np.arange(ncells, dtype=np.int32)
    vals = fem.Expression(u, Q.element.interpolation_points).eval(msh, cells)
    vals = vals.reshape(ncells, -1, bs)  # (cell, vertex, component)
    dofs = Q.dofmap.list[:ncells]  # (cell, vertex) -> block index
    nblocks = Q.dofmap.index_map.size_local + Q.dofmap.index_map.num_ghosts
    acc = la.vector(Q.dofmap.index_map, bs)
    cnt = la.vector(Q.dofmap.index_map, 1)
    # Only owned cells contribute, then ghosts' partial sums are added to their owners.
    nown = msh.topology.index_map(tdim).size_local
    a = np.zeros((nblocks, bs))
    np.add.at(a, dofs[:nown].ravel(), vals[:nown].reshape(-1, bs))
    c = np.zeros(nblocks)
    np.add.at(c, dofs[:nown].ravel(), 1.0)
    acc.array[:] = a.ravel()
    cnt.array[:] = c
    acc.scatter_reverse(la.InsertMode.add)
    cnt.scatter_reverse(la.InsertMode.add)
    acc.scatter_forward()
    cnt.scatter_forward()
    q.x.array[:] = (acc.array.reshape(-1, bs) / np.maximum(cnt.array, 1.0)[:, None]).ravel()
    return q


def write_paraview(sol: Solution, out: Path, times: list[float], *, vtx: bool = False) -> None:
    """Write ``solution.xdmf``, ``velocity.xdmf`` and native-degree ``pvd/`` files. Collective."""
    comm = sol.comm
    fields = {
        "source": sol.p0,
        "target": sol.p1,
        "potential": sol.phi,
        "flux": sol.flux(),
    }
    with dolfinx.io.XDMFFile(comm, str(out / "solution.xdmf"), "w") as f:
        f.write_mesh(sol.msh)
        for name, u in fields.items():
            f.write_function(to_vertex_function(u, name), 0.0)
    velocities = [(t, sol.velocity(t)) for t in times]
    with dolfinx.io.XDMFFile(comm, str(out / "velocity.xdmf"), "w") as f:
        f.write_mesh(sol.msh)
        for t, v in velocities:
            f.write_function(to_vertex_function(v, "velocity"), float(t))
    pvd = out / "pvd"
    for name, u in fields.items():
        u.name = name
        with dolfinx.io.VTKFile(comm, str(pvd / f"{name}.pvd"), "w") as f:
            f.write_function(u, 0.0)
    with dolfinx.io.VTKFile(comm, str(pvd / "velocity.pvd"), "w") as f:
        for t, v in velocities:
            f.write_function(v, float(t))
    if vtx and dolfinx.io.has_adios2:
        for name, u in fields.items():
            with dolfinx.io.VTXWriter(comm, str(out / "vtx" / f"{name}.bp"), [u]) as f:
                f.write(0.0)


def _gather_dofs(u: fem.Function, comm: MPI.Comm) -> tuple[np.ndarray, np.ndarray] | None:
    V = u.function_space
    n = V.dofmap.index_map.size_local
    x = V.tabulate_dof_coordinates()[:n]
    xs = comm.gather(x, root=0)
    vs = comm.gather(u.x.array[:n].copy(), root=0)
    if comm.rank == 0:
        return np.concatenate(xs), np.concatenate(vs)
    return None


def write_checkpoint(sol: Solution, folder: Path, config: dict[str, Any]) -> None:
    """Write the mesh and the Lagrange fields so that any rank count can reload them.

    Collective. The mesh goes to ``mesh.xdmf`` (DOLFINx's parallel writer); potential, source
    and target go to ``fields.h5`` as (dof coordinates, values) gathered on rank 0.
    """
    import h5py

    comm = sol.comm
    if comm.rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
    comm.barrier()
    with dolfinx.io.XDMFFile(comm, str(folder / "mesh.xdmf"), "w") as f:
        f.write_mesh(sol.msh)
    funcs = (sol.phi, sol.p0, sol.p1)
    data = {name: _gather_dofs(u, comm) for name, u in zip(_FIELDS, funcs, strict=True)}
    if comm.rank == 0:
        tmp = folder / "fields.h5.part"
        with h5py.File(tmp, "w") as h5:
            h5.attrs["format"] = "beckmann-checkpoint"
            h5.attrs["version"] = CHECKPOINT_VERSION
            h5.attrs["degree"] = sol.degree
            h5.attrs["gdim"] = sol.gdim
            h5.attrs["config"] = json.dumps(config)
            h5.attrs["info"] = json.dumps(_jsonable(sol.info))
            first = data["potential"]
            assert first is not None
            h5.create_dataset("dof_coordinates", data=first[0])
            for name, item in data.items():
                assert item is not None
                h5.create_dataset(name, data=item[1])
        os.replace(tmp, folder / "fields.h5")  # atomic: a killed write leaves no half file
    comm.barrier()


def read_checkpoint(folder: Path, comm: MPI.Comm) -> Solution:
    """Reload a checkpoint on ``comm`` (any number of ranks). Collective.

    Raises:
        RuntimeError: The checkpoint is missing or unreadable (on every rank).
    """
    import h5py
    from scipy.spatial import cKDTree

    folder = Path(folder)
    err = None
    meta: dict[str, Any] = {}
    if comm.rank == 0:
        try:
            with h5py.File(folder / "fields.h5", "r") as h5:
                if h5.attrs.get("format") != "beckmann-checkpoint":
                    raise RuntimeError("not a beckmann checkpoint")
                meta = {
                    "degree": int(h5.attrs["degree"]),
                    "version": int(h5.attrs["version"]),
                    "config": json.loads(h5.attrs["config"]),
                    "info": json.loads(h5.attrs["info"]),
                }
            if not (folder / "mesh.xdmf").is_file():
                raise RuntimeError("mesh.xdmf is missing")
        except (OSError, KeyError, RuntimeError, ValueError) as e:
            err = f"cannot read the checkpoint in {str(folder)!r}: {e}"
    err, meta = comm.bcast((err, meta), root=0)
    if err:
        raise RuntimeError(err)
    with dolfinx.io.XDMFFile(comm, str(folder / "mesh.xdmf"), "r") as f:
        msh = f.read_mesh(name="mesh")
    V = fem.functionspace(msh, ("Lagrange", meta["degree"]))
    n = V.dofmap.index_map.size_local
    x = V.tabulate_dof_coordinates()[:n]
    funcs = {}
    with h5py.File(folder / "fields.h5", "r") as h5:
        coords = h5["dof_coordinates"][:]
        diam = float(np.ptp(coords, axis=0).max())
        dist, idx = cKDTree(coords).query(x)
        bad = comm.allreduce(int(np.count_nonzero(dist > 1e-10 * max(diam, 1.0))), op=MPI.SUM)
        if bad:
            raise RuntimeError(
                f"checkpoint in {str(folder)!r} does not match its mesh ({bad} dofs unmatched)"
            )
        for name in _FIELDS:
            u = fem.Function(V, name=name)
            u.x.array[:n] = h5[name][:][idx]
            u.x.scatter_forward()
            funcs[name] = u
    return Solution(msh, funcs["potential"], funcs["source"], funcs["target"], info=meta)


def load_run(run_dir: str | Path, comm: MPI.Comm) -> Solution:
    """Reload the solution of a run folder on any number of ranks. Collective.

    Raises:
        ValueError: ``run_dir`` is not a beckmann run folder (on every rank).
    """
    run = Path(run_dir)
    ok = comm.bcast((run / "checkpoint" / "fields.h5").is_file() if comm.rank == 0 else None)
    if not ok:
        raise ValueError(
            f"{str(run)!r} is not a beckmann run folder (no checkpoint/fields.h5); "
            "create one with `beckmann solve --out DIR`"
        )
    sol = read_checkpoint(run / "checkpoint", comm)
    summary = run / "summary.json"
    if comm.rank == 0 and summary.is_file():
        sol.info["summary"] = json.loads(summary.read_text())
    sol.info["summary"] = comm.bcast(sol.info.get("summary"), root=0)
    return sol


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def write_json(path: Path, data: dict[str, Any], comm: MPI.Comm) -> None:
    """Write ``data`` as JSON from rank 0 (atomically). Collective (ends with a barrier)."""
    if comm.rank == 0:
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_text(json.dumps(_jsonable(data), indent=2) + "\n")
        os.replace(tmp, path)
    comm.barrier()


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """Read ``summary.json`` of a run (serial helper)."""
    return json.loads((Path(run_dir) / "summary.json").read_text())


def toml_dumps(cfg: dict[str, Any]) -> str:
    """Serialise a resolved config (nested dicts of TOML types) to TOML text."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v) if np.isfinite(v) else ("inf" if v > 0 else "nan")
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(i) for i in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(str(k))} = {value(i)}" for k, i in v.items()) + "}"
        raise TypeError(f"cannot write {v!r} to TOML")

    for section, values in cfg.items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f"{k} = {value(v)}")
        lines.append("")
    text = "\n".join(lines)
    tomllib.loads(text)  # round-trip check
    return text

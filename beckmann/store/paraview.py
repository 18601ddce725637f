"""ParaView files of named functions on a mesh: binary, the mesh written once per file.

* :class:`XdmfSeries`: XDMF + HDF5 (DOLFINx's writer), the format Debian's ParaView 5.11 reads
  (``Xdmf3ReaderS``). XDMF holds Lagrange functions of the mesh's degree only, so every field is
  represented at the mesh vertices (P1): continuous fields are interpolated (exact at the
  vertices), discontinuous ones averaged over the cells around each vertex
  (:func:`to_vertex_function`). The mesh is written once, at the top of the file; every step
  refers to it.
* :class:`NativeSeries`: one field in its own space (P_k, DG_k) as ADIOS2 VTX (``.bp``, binary;
  opt-in). ParaView reads ``.bp`` folders with its ADIOS2 VTX reader, which needs a ParaView
  built with ADIOS2 (the Kitware binaries from 5.10 on; Debian's 5.11 package has none).

Both are collective (every rank enters every call) and report failures through
:func:`beckmann.store.writes.before_collective_write`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from beckmann._dolfinx import dmesh, dolfinx, fem
from beckmann.fields import is_vertex_function, to_vertex_function
from beckmann.store.writes import before_collective_write, write_on_root

__all__ = ["NativeSeries", "XdmfSeries", "to_vertex_function"]


class XdmfSeries:
    """An XDMF + HDF5 file of vertex fields over one mesh, written step by step.

    Use as a context manager; :meth:`write` adds named functions at a time value. Collective.

    Args:
        path: The ``.xdmf`` file (its ``.h5`` companion is written beside it).
        msh: The mesh, written once when the file is opened.
        mesh_of: Another XDMF file of the same folder that already holds ``msh`` (written by an
            :class:`XdmfSeries`). The mesh is then not written again: this file's XML refers to
            the other file's HDF5 datasets (``solution.h5:/Mesh/...``).
    """

    def __init__(self, path: Path, msh: dmesh.Mesh, *, mesh_of: Path | None = None) -> None:
        self.path = Path(path)
        self.msh = msh
        self.mesh_of = None if mesh_of is None else Path(mesh_of)
        self._file: Any = None
        self._spaces: dict[tuple[int, ...], fem.FunctionSpace] = {}

    def __enter__(self) -> XdmfSeries:
        before_collective_write(self.msh.comm, self.path.name)
        self._file = dolfinx.io.XDMFFile(self.msh.comm, str(self.path), "w")
        if self.mesh_of is None:
            self._file.write_mesh(self.msh)
        return self

    def write(
        self, fields: Mapping[str, fem.Function], t: float = 0.0
    ) -> dict[str, fem.Function]:
        """Write each function (as a vertex field named by its key) at time ``t``.

        Returns:
            The vertex (P1) functions written, by name (the inputs themselves when P1).
        """
        before_collective_write(self.msh.comm, self.path.name)
        written = {}
        for name, u in fields.items():
            shape = tuple(u.ufl_shape)
            if shape not in self._spaces and not is_vertex_function(u):
                self._spaces[shape] = fem.functionspace(self.msh, ("Lagrange", 1, shape))
            q = to_vertex_function(u, name, self._spaces.get(shape))
            old, q.name = q.name, name  # XDMF names the attribute after the function
            level = dolfinx.log.get_log_level()
            if self.mesh_of is not None:  # DOLFINx warns of the mesh added at the end
                dolfinx.log.set_log_level(dolfinx.log.LogLevel.ERROR)
            try:
                self._file.write_function(q, float(t))
            finally:
                q.name = old
                dolfinx.log.set_log_level(level)
            written[name] = q
        return written

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            if self.mesh_of is not None and exc_type is None:
                mesh_of = self.mesh_of
                write_on_root(self.msh.comm, self.path.name, lambda: _link_mesh(self.path, mesh_of))


def _link_mesh(path: Path, mesh_of: Path) -> None:
    """Put ``mesh_of``'s mesh grid (its XML, referring to its HDF5 file) at the top of ``path``.

    Both files are DOLFINx XDMF of one folder. Every step of ``path`` refers to the first
    uniform grid of its domain (an XInclude xpointer), which is then this grid.
    """
    other = mesh_of.read_text()
    start = other.find('<Grid Name="mesh" GridType="Uniform">')
    end = other.find("</Grid>", start)
    if start < 0 or end < 0:
        raise RuntimeError(f"{str(mesh_of)!r} holds no mesh grid")
    grid = other[start : end + len("</Grid>")]
    text = path.read_text()
    at = text.find("<Domain>")
    if at < 0:
        raise RuntimeError(f"{str(path)!r} is not an XDMF file of DOLFINx")
    at += len("<Domain>")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text[:at] + "\n    " + grid + text[at:])
    tmp.replace(path)


class NativeSeries:
    """One function in its own space as a VTX (``.bp``) time series. Collective.

    The writer is created at the first :meth:`write` (VTX binds one function object): later
    steps copy their values into it, so a series may be fed freshly computed functions.
    """

    def __init__(self, path: Path, name: str) -> None:
        self.path = Path(path)
        self.name = name
        self._u: fem.Function | None = None
        self._writer: Any = None

    def write(self, u: fem.Function, t: float = 0.0) -> None:
        """Append ``u`` at time ``t``."""
        comm = u.function_space.mesh.comm
        before_collective_write(comm, self.path.name)
        if self._writer is None:
            self._u = fem.Function(u.function_space, name=self.name)
            self._writer = dolfinx.io.VTXWriter(
                comm, str(self.path), [self._u], mesh_policy=dolfinx.io.VTXMeshPolicy.reuse
            )
        assert self._u is not None
        self._u.x.array[:] = u.x.array
        self._writer.write(float(t))

    def __enter__(self) -> NativeSeries:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

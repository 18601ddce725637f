"""Tests for beckmann.mesh; the same suite runs serially and under mpirun."""

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_folder

from beckmann._dolfinx import MPI, dmesh, dolfinx, fem, ufl
from beckmann.mesh import create_mesh, describe

COMM = MPI.COMM_WORLD
MESHES = Path(__file__).resolve().parent.parent / "meshes"


# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def tmp():
    """A folder shared by all ranks (:func:`conftest.shared_folder`), one for the module."""
    with shared_folder("beckmann-mesh-") as path:
        yield path


def write_text(path: Path, text: str) -> str:
    """Rank 0 writes the file; every rank waits for it."""
    if COMM.rank == 0:
        path.write_text(text)
    COMM.barrier()
    return str(path)


def measure(msh, ds: bool = False) -> float:
    """Global area/volume (or boundary length/area with ds=True) by assembling 1."""
    measure = ufl.ds if ds else ufl.dx
    local = fem.assemble_scalar(fem.form(1.0 * measure(domain=msh)))
    return COMM.allreduce(local, op=MPI.SUM)


def num_boundary_facets(msh) -> int:
    tdim = msh.topology.dim
    msh.topology.create_connectivity(tdim - 1, tdim)
    facets = dmesh.exterior_facet_indices(msh.topology)
    owned = msh.topology.index_map(tdim - 1).size_local
    return COMM.allreduce(int(np.count_nonzero(facets < owned)), op=MPI.SUM)


def inscribed_polygon_area(n_sides: int, radius: float = 1.0) -> float:
    """Area of the regular n-gon inscribed in a circle: the exact area of a uniform disk mesh."""
    return 0.5 * n_sides * radius**2 * math.sin(2 * math.pi / n_sides)


def check_linear_simplex(msh, gdim: int) -> None:
    assert msh.geometry.dim == gdim
    assert msh.geometry.cmaps[0].degree == 1
    expected = dmesh.CellType.triangle if gdim == 2 else dmesh.CellType.tetrahedron
    assert msh.topology.cell_type == expected


def raises_everywhere(section, error, fragment):
    """Every rank raises the same error; a rank that did not would hang the others."""
    with pytest.raises(error, match=fragment) as info:
        create_mesh(section, COMM)
    messages = COMM.allgather(str(info.value))
    assert len(set(messages)) == 1, messages
    assert "\n" not in messages[0]


# ---------------------------------------------------------------------------------------------
# built-in meshes


@pytest.mark.parametrize("n", [1, 3, 8])
def test_unit_square(n):
    msh = create_mesh({"kind": "unit_square", "n": n}, COMM)
    check_linear_simplex(msh, 2)
    info = describe(msh)
    assert info["cells"] == 2 * n**2
    assert info["vertices"] == (n + 1) ** 2
    assert info["gdim"] == 2
    assert info["hmax"] == pytest.approx(math.sqrt(2) / n)
    assert info["hmin"] == pytest.approx(math.sqrt(2) / n)
    assert info["bbox"] == [[0.0, 0.0], [1.0, 1.0]]
    assert measure(msh) == pytest.approx(1.0, abs=1e-12)
    assert measure(msh, ds=True) == pytest.approx(4.0, abs=1e-12)


def test_unit_cube():
    msh = create_mesh({"kind": "unit_cube", "n": 3}, COMM)
    check_linear_simplex(msh, 3)
    info = describe(msh)
    assert (info["cells"], info["vertices"], info["gdim"]) == (6 * 27, 64, 3)
    assert info["bbox"] == [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    assert measure(msh) == pytest.approx(1.0, abs=1e-12)
    assert measure(msh, ds=True) == pytest.approx(6.0, abs=1e-12)


def test_defaults_fill_missing_keys():
    msh = create_mesh({"kind": "unit_square"}, COMM)  # n from beckmann.config: 32
    assert describe(msh)["cells"] == 2 * 32**2


@pytest.mark.parametrize("h", [0.2, 0.1])
def test_disk(h):
    msh = create_mesh({"kind": "disk", "h": h}, COMM)
    check_linear_simplex(msh, 2)
    # gmsh spaces the boundary nodes evenly: the mesh is the regular N-gon inscribed in the
    # unit circle, with N ~ 2 pi / h, so its area is exactly known and pi - area = O(h^2).
    n_sides = num_boundary_facets(msh)
    assert 2 * math.pi / h <= n_sides <= 2 * math.pi / h + 2
    area = measure(msh)
    assert area == pytest.approx(inscribed_polygon_area(n_sides), abs=1e-12)
    assert 0 < math.pi - area < math.pi * h**2 / 6 * 1.05
    info = describe(msh)
    lo, hi = np.array(info["bbox"])
    assert np.all(hi <= 1 + 1e-12) and np.all(lo >= -1 - 1e-12)
    assert hi[0] == pytest.approx(1.0) and info["hmax"] < 2 * h


def test_lshape():
    h = 0.25
    msh = create_mesh({"kind": "lshape", "h": h}, COMM)
    check_linear_simplex(msh, 2)
    assert measure(msh) == pytest.approx(3.0, abs=1e-12)
    assert measure(msh, ds=True) == pytest.approx(8.0, abs=1e-12)
    info = describe(msh)
    assert info["bbox"] == [[-1.0, -1.0], [1.0, 1.0]]
    assert info["hmax"] < 2 * h
    # the re-entrant corner is a vertex, and no cell lies in the removed quadrant (0,1)x(-1,0)
    x = msh.geometry.x[:, :2]
    has_origin = COMM.allreduce(bool(np.any(np.linalg.norm(x, axis=1) < 1e-14)), op=MPI.LOR)
    assert has_origin
    midpoints = dmesh.compute_midpoints(
        msh, 2, np.arange(msh.topology.index_map(2).size_local, dtype=np.int32)
    )
    assert not np.any((midpoints[:, 0] > 0) & (midpoints[:, 1] < 0))


def test_gmsh_session_of_caller_is_kept():
    if COMM.rank == 0:
        import gmsh

        gmsh.initialize(readConfigFiles=False, interruptible=False)
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("mine")
    try:
        msh = create_mesh({"kind": "lshape", "h": 0.5}, COMM)
        assert measure(msh) == pytest.approx(3.0, abs=1e-12)
        if COMM.rank == 0:
            assert gmsh.isInitialized()
            assert gmsh.model.getCurrent() == "mine"
    finally:
        if COMM.rank == 0:
            gmsh.finalize()


# ---------------------------------------------------------------------------------------------
# shipped .msh files


def test_shipped_disk():
    msh = create_mesh({"kind": "file", "path": str(MESHES / "disk.msh")}, COMM)
    check_linear_simplex(msh, 2)
    n_sides = num_boundary_facets(msh)
    assert measure(msh) == pytest.approx(inscribed_polygon_area(n_sides), abs=1e-12)
    assert 0 < math.pi - measure(msh) < 0.01


def test_shipped_annulus():
    msh = create_mesh({"kind": "file", "path": str(MESHES / "annulus.msh")}, COMM)
    check_linear_simplex(msh, 2)
    # inscribed polygons on both circles: the hole is too small by as much as the disk
    n_sides = num_boundary_facets(msh)
    x = msh.geometry.x[:, :2]
    r = np.linalg.norm(x, axis=1)
    assert np.all((r > 0.5 - 1e-12) & (r < 1 + 1e-12))
    area = measure(msh)
    assert area == pytest.approx(0.75 * math.pi, abs=0.01)
    assert n_sides == 120  # the .geo spaces nodes by h = 0.08: 80 outer, 40 inner sides
    exact = inscribed_polygon_area(80) - inscribed_polygon_area(40, 0.5)
    assert area == pytest.approx(exact, abs=1e-12)


def test_shipped_ball():
    msh = create_mesh({"kind": "file", "path": str(MESHES / "ball.msh")}, COMM)
    check_linear_simplex(msh, 3)
    info = describe(msh)
    assert 1000 < info["cells"] < 10_000
    r = np.linalg.norm(msh.geometry.x, axis=1)
    assert np.all(r < 1 + 1e-12)
    volume = measure(msh)
    # the inscribed polyhedron: a little less than 4 pi / 3, and equal to (1/3) int x.n ds
    assert 0 < 4 * math.pi / 3 - volume < 0.02 * 4 * math.pi / 3
    xn = ufl.dot(ufl.SpatialCoordinate(msh), ufl.FacetNormal(msh)) / 3
    flux = COMM.allreduce(fem.assemble_scalar(fem.form(xn * ufl.ds)), op=MPI.SUM)
    assert volume == pytest.approx(flux, rel=1e-12)
    assert measure(msh, ds=True) == pytest.approx(4 * math.pi, rel=0.03)


@pytest.mark.parametrize("name", ["disk", "annulus", "ball"])
def test_shipped_files_are_small_msh41_ascii(name):
    path = MESHES / f"{name}.msh"
    assert path.stat().st_size < 300_000
    assert path.read_text().startswith("$MeshFormat\n4.1 0 8\n")
    assert (MESHES / f"{name}.geo").is_file()


# ---------------------------------------------------------------------------------------------
# hand-written .msh files

_NODES_UNIT_SQUARE = """$Nodes
1 4 1 9
{dim} 1 0 4
1
2
3
9
0 0 {z}
1 0 0
1 1 0
0 1 0
$EndNodes
"""
_HEADER = "$MeshFormat\n4.1 0 8\n$EndMeshFormat\n"


def test_msh_without_physical_groups_and_with_node_gaps(tmp):
    # no $Entities, no physical groups, node tags 1 2 3 9
    elements = "$Elements\n1 2 1 2\n2 1 2 2\n1 1 2 3\n2 1 3 9\n$EndElements\n"
    path = write_text(tmp / "plain.msh", _HEADER + _NODES_UNIT_SQUARE.format(z=0, dim=2) + elements)
    msh = create_mesh({"kind": "file", "path": path}, COMM)
    check_linear_simplex(msh, 2)
    assert describe(msh)["cells"] == 2
    assert measure(msh) == pytest.approx(1.0, abs=1e-14)


def test_msh_second_order_is_made_linear(tmp):
    nodes = (
        "$Nodes\n1 9 1 9\n2 1 0 9\n"
        + "".join(f"{i}\n" for i in range(1, 10))
        + "0 0 0\n1 0 0\n1 1 0\n0 1 0\n0.5 0 0\n1 0.5 0\n0.5 0.5 0\n0.5 1 0\n0 0.5 0\n"
        + "$EndNodes\n"
    )
    elements = "$Elements\n1 2 1 2\n2 1 9 2\n1 1 2 3 5 6 7\n2 1 3 4 7 8 9\n$EndElements\n"
    path = write_text(tmp / "p2.msh", _HEADER + nodes + elements)
    msh = create_mesh({"kind": "file", "path": path}, COMM)
    check_linear_simplex(msh, 2)
    assert (describe(msh)["cells"], describe(msh)["vertices"]) == (2, 4)
    assert measure(msh) == pytest.approx(1.0, abs=1e-14)


def test_xdmf_round_trip(tmp):
    original = create_mesh({"kind": "disk", "h": 0.2}, COMM)
    path = str(tmp / "disk.xdmf")
    with dolfinx.io.XDMFFile(COMM, path, "w") as xdmf:
        xdmf.write_mesh(original)
    msh = create_mesh({"kind": "file", "path": path}, COMM)
    check_linear_simplex(msh, 2)
    assert describe(msh) == describe(original)
    assert measure(msh) == pytest.approx(measure(original), abs=1e-13)


def test_xdmf_3d_round_trip(tmp):
    original = create_mesh({"kind": "file", "path": str(MESHES / "ball.msh")}, COMM)
    path = str(tmp / "ball.xdmf")
    with dolfinx.io.XDMFFile(COMM, path, "w") as xdmf:
        xdmf.write_mesh(original)
    msh = create_mesh({"kind": "file", "path": path}, COMM)
    check_linear_simplex(msh, 3)
    assert describe(msh)["cells"] == describe(original)["cells"]
    assert measure(msh) == pytest.approx(measure(original), rel=1e-13)


_XDMF = """<?xml version="1.0"?>
<Xdmf Version="3.0">
  <Domain>
    <Grid Name="{name}" GridType="Uniform">
      <Topology TopologyType="{cell}" NumberOfElements="2">
        <DataItem Dimensions="2 3" NumberType="Int" Format="XML">0 1 2 0 2 3</DataItem>
      </Topology>
      <Geometry GeometryType="XYZ">
        <DataItem Dimensions="4 3" Format="XML">0 0 {z} 1 0 0 1 1 0 0 1 0</DataItem>
      </Geometry>
    </Grid>
  </Domain>
</Xdmf>
"""


def write_xdmf(tmp, stem, name="mesh", cell="Triangle", z=0, h5=True):
    if COMM.rank == 0 and h5:
        import h5py

        h5py.File(tmp / f"{stem}.h5", "w").close()  # DOLFINx opens it even for inline data
    return write_text(tmp / f"{stem}.xdmf", _XDMF.format(name=name, cell=cell, z=z))


def test_xdmf_inline_xyz_first_grid(tmp):
    # grid not called "mesh": the first grid is used; z = 0 triangles get gdim 2
    path = write_xdmf(tmp, "inline", name="square")
    msh = create_mesh({"kind": "file", "path": path}, COMM)
    check_linear_simplex(msh, 2)
    info = describe(msh)
    assert (info["cells"], info["vertices"], info["bbox"]) == (2, 4, [[0.0, 0.0], [1.0, 1.0]])
    assert measure(msh) == pytest.approx(1.0, abs=1e-14)


# ---------------------------------------------------------------------------------------------
# errors: the same exception and message on every rank


@pytest.mark.parametrize(
    ("section", "error", "fragment"),
    [
        ({"kind": "torus"}, ValueError, "unknown mesh kind 'torus'"),
        ({"kind": "unit_square", "n": 0}, ValueError, "mesh.n must be an integer >= 1, got 0"),
        ({"kind": "unit_cube", "n": -2}, ValueError, "got -2"),
        ({"kind": "unit_square", "n": 2.5}, ValueError, "got 2.5"),
        ({"kind": "unit_square", "n": True}, ValueError, "got True"),
        ({"kind": "disk", "h": 0.0}, ValueError, r"mesh.h must be a finite number > 0, got 0.0"),
        ({"kind": "lshape", "h": -0.1}, ValueError, "got -0.1"),
        ({"kind": "disk", "h": float("nan")}, ValueError, "got nan"),
        ({"kind": "unit_square", "nx": 3}, ValueError, "unknown mesh option.*'nx'"),
        ({"kind": "file", "path": ""}, ValueError, "mesh.path must name"),
        ({"kind": "file", "path": "x.msh"}, ValueError, "mesh file 'x.msh' does not exist"),
        ({"kind": "file", "path": "x.vtk"}, ValueError, r"unsupported mesh file extension '\.vtk'"),
    ],
)
def test_bad_arguments(section, error, fragment):
    raises_everywhere(section, error, fragment)


def test_not_a_dict():
    raises_everywhere([("kind", "disk")], ValueError, "must be a dict")


@pytest.mark.parametrize(
    ("name", "text", "error", "fragment"),
    [
        ("garbage.msh", "hello garbage\n", RuntimeError, r"is not a Gmsh \.msh file"),
        ("empty.msh", "", RuntimeError, r"is not a Gmsh \.msh file"),
        ("broken.msh", _HEADER + "$Nodes\n1 4 1 4\n2 1 0 4\n1\n", RuntimeError, "gmsh could not"),
        (
            "lines.msh",
            _HEADER + _NODES_UNIT_SQUARE.format(z=0, dim=1) + "$Elements\n1 1 1 1\n1 1 1 1\n1 1 2\n"
            "$EndElements\n",
            ValueError,
            "has no 2D or 3D cells",
        ),
        (
            "quads.msh",
            _HEADER
            + _NODES_UNIT_SQUARE.format(z=0, dim=2)
            + "$Elements\n1 1 1 1\n2 1 3 1\n1 1 2 3 9\n"
            "$EndElements\n",
            ValueError,
            "has Quadrilateral 4 cells",
        ),
        (
            "surface.msh",
            _HEADER
            + _NODES_UNIT_SQUARE.format(z=0.5, dim=2)
            + "$Elements\n1 2 1 2\n2 1 2 2\n1 1 2 3\n"
            "2 1 3 9\n$EndElements\n",
            ValueError,
            "surface mesh in 3D",
        ),
    ],
)
def test_bad_msh(tmp, name, text, error, fragment):
    path = write_text(tmp / name, text)
    raises_everywhere({"kind": "file", "path": path}, error, fragment)


def test_truncated_msh(tmp):
    text = (MESHES / "disk.msh").read_text()
    path = write_text(tmp / "truncated.msh", text[: len(text) // 2])
    raises_everywhere({"kind": "file", "path": path}, RuntimeError, "gmsh could not read")


def test_bad_xdmf(tmp):
    path = write_text(tmp / "garbage.xdmf", "<Xdmf><Domain><Grid>\x00 oops")
    raises_everywhere({"kind": "file", "path": path}, RuntimeError, "cannot parse XDMF file")
    path = write_text(tmp / "nogrid.xdmf", "<Xdmf><Domain></Domain></Xdmf>")
    raises_everywhere({"kind": "file", "path": path}, RuntimeError, "has no mesh grid")
    path = write_xdmf(tmp, "noh5", h5=False)
    raises_everywhere({"kind": "file", "path": path}, RuntimeError, r"noh5\.h5' does not exist")
    path = write_xdmf(tmp, "quads", cell="Quadrilateral")
    raises_everywhere({"kind": "file", "path": path}, ValueError, "'quadrilateral'")
    path = write_xdmf(tmp, "surface", z=0.5)
    raises_everywhere({"kind": "file", "path": path}, ValueError, "surface mesh in 3D")


def test_xdmf_with_missing_dataset(tmp):
    original = create_mesh({"kind": "unit_square", "n": 2}, COMM)
    path = tmp / "gone.xdmf"
    with dolfinx.io.XDMFFile(COMM, str(path), "w") as xdmf:
        xdmf.write_mesh(original)
    COMM.barrier()
    if COMM.rank == 0:
        import h5py

        with h5py.File(path.with_suffix(".h5"), "a") as h5:
            del h5["Mesh/mesh/topology"]
    COMM.barrier()
    raises_everywhere({"kind": "file", "path": str(path)}, RuntimeError, "corrupt XDMF file")


# ---------------------------------------------------------------------------------------------
# physical groups (gmsh's t4-like plate with a hole, every surface written)


def _write_plate(path: Path) -> dict[int, float]:
    """A 2 x 1 plate with two round holes, each hole meshed as its own surface.

    Physical groups: 7 "plate" (the plate around the holes), 9 "insert" (the first hole); the
    second hole's surface has no group but is written too (``Mesh.SaveAll``), as when t4.geo's
    mesh is saved with all its surfaces. Returns each surface's area summed over its triangles
    (read back from gmsh: a second method, independent of DOLFINx).
    """
    import gmsh

    gmsh.initialize(readConfigFiles=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        occ = gmsh.model.occ
        plate = occ.addRectangle(0, 0, 0, 2.0, 1.0)
        holes = [occ.addDisk(0.5, 0.5, 0, 0.25, 0.25), occ.addDisk(1.4, 0.5, 0, 0.3, 0.3)]
        occ.fragment([(2, plate)], [(2, h) for h in holes])
        occ.synchronize()
        centre = {t: occ.getCenterOfMass(2, t)[0] for _, t in gmsh.model.getEntities(2)}
        mass = {t: occ.getMass(2, t) for t in centre}
        outer = max(mass, key=mass.get)
        insert = min((t for t in centre if t != outer), key=lambda t: centre[t])
        gmsh.model.addPhysicalGroup(2, [outer], tag=7, name="plate")
        gmsh.model.addPhysicalGroup(2, [insert], tag=9, name="insert")
        gmsh.model.addPhysicalGroup(1, [1], tag=3, name="edge")
        gmsh.option.setNumber("Mesh.MeshSizeMax", 0.1)
        gmsh.model.mesh.generate(2)
        gmsh.option.setNumber("Mesh.SaveAll", 1)
        gmsh.write(str(path))
        areas = {}
        for t in centre:
            _, _, nodes = gmsh.model.mesh.getElements(2, t)
            tri = np.asarray(nodes[0]).reshape(-1, 3)
            x = np.array([gmsh.model.mesh.getNode(int(n))[0][:2] for n in tri.ravel()])
            x = x.reshape(-1, 3, 2)
            e1, e2 = x[:, 1] - x[:, 0], x[:, 2] - x[:, 0]
            areas[t] = float(np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum() / 2)
        return {7: areas[outer], 9: areas[insert], 0: sum(areas.values())}
    finally:
        gmsh.finalize()


@pytest.fixture(scope="module")
def plate(tmp):
    path = tmp / "plate.msh"
    areas = _write_plate(path) if COMM.rank == 0 else None
    areas = COMM.bcast(areas, root=0)
    COMM.barrier()
    return str(path), areas


def test_physical_groups_default_keeps_the_holes(plate):
    path, areas = plate
    assert areas[0] == pytest.approx(2.0, rel=1e-12)  # every surface written
    msh = create_mesh({"kind": "file", "path": path}, COMM)
    check_linear_simplex(msh, 2)
    # only grouped cells: the ungrouped second hole stays a hole
    assert measure(msh) == pytest.approx(areas[7] + areas[9], rel=1e-12)
    assert measure(msh) < 2.0 - 0.25
    groups = describe(msh)["physical_groups"]
    assert groups == [{"tag": 7, "name": "plate"}, {"tag": 9, "name": "insert"}]


@pytest.mark.parametrize(("cells", "key"), [([7], 7), (["insert"], 9), ([9, 9], 9)])
def test_physical_groups_explicit_subset(plate, cells, key):
    path, areas = plate
    msh = create_mesh({"kind": "file", "path": path, "cells": cells}, COMM)
    assert measure(msh) == pytest.approx(areas[key], rel=1e-12)
    assert [g["tag"] for g in describe(msh)["physical_groups"]] == [key]
    if key == 9:  # the nodes of the dropped cells are gone too: the box is the insert's
        box = np.array(describe(msh)["bbox"])
        assert np.allclose(box, [[0.25, 0.25], [0.75, 0.75]], atol=1e-9), box


def test_physical_groups_unknown_tag_lists_the_groups(plate):
    path, _ = plate
    raises_everywhere({"kind": "file", "path": path, "cells": [5]}, ValueError,
                      r"no 2D physical group 5 in mesh file .*plate\.msh.*7 \('plate'\), "
                      r"9 \('insert'\)")
    raises_everywhere({"kind": "file", "path": path, "cells": ["edge"]}, ValueError,
                      r"no 2D physical group 'edge'")


def test_physical_groups_without_groups_takes_every_cell(tmp):
    elements = "$Elements\n1 2 1 2\n2 1 2 2\n1 1 2 3\n2 1 3 9\n$EndElements\n"
    path = write_text(tmp / "plain2.msh",
                      _HEADER + _NODES_UNIT_SQUARE.format(z=0, dim=2) + elements)
    assert describe(create_mesh({"kind": "file", "path": path}, COMM))["physical_groups"] is None
    raises_everywhere({"kind": "file", "path": path, "cells": [1]}, ValueError,
                      "has no 2D physical groups")
    raises_everywhere({"kind": "unit_square", "cells": [1]}, ValueError,
                      "does not apply to mesh.kind = 'unit_square'")
    raises_everywhere({"kind": "file", "path": path, "cells": [1.5]}, ValueError,
                      "mesh.cells must be a list")


# ---------------------------------------------------------------------------------------------
# memory estimates


@pytest.mark.parametrize(
    ("section", "degree", "fragment"),
    [
        ({"kind": "unit_square", "n": 100000}, 2,
         r"unit_square mesh with mesh\.n = 100000 and solver\.degree = 2 .*GiB of memory, more "
         r"than the .* GiB available; lower mesh\.n"),
        ({"kind": "unit_cube", "n": 5000}, 1, r"unit_cube .*mesh\.n = 5000.*lower mesh\.n"),
        ({"kind": "disk", "h": 1e-6}, 1, r"disk mesh with mesh\.h = 1e-06.*raise mesh\.h"),
    ],
)
def test_memory_estimate_refuses_huge_meshes(section, degree, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        create_mesh(section, COMM, degree=degree)
    assert len(set(COMM.allgather(str(info.value)))) == 1



def test_summary_names_the_physical_groups(plate, tmp):
    import json

    from beckmann import config, pipeline

    path, _ = plate
    cfg = config.resolve(sets=["mesh.kind='file'", f"mesh.path='{path}'", "mesh.cells=['plate']",
                               "solver.degree=1", "output.checkpoint=false"])
    pipeline.run(cfg, COMM, out=tmp / "plate-run")
    summary = json.loads((tmp / "plate-run" / "summary.json").read_text())
    assert summary["physical_groups"] == [{"tag": 7, "name": "plate"}]
    assert summary["config"]["mesh"]["cells"] == ["plate"]

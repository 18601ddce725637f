"""Regenerate meshes/*.msh (MSH 4.1 ascii) from meshes/*.geo with the gmsh Python API.

Usage: python scripts/make_meshes.py [name ...]   (default: every .geo in meshes/)
"""

from __future__ import annotations

import sys
from pathlib import Path

import gmsh

MESHES = Path(__file__).resolve().parent.parent / "meshes"


def make(geo: Path) -> Path:
    """Mesh one .geo file in its own dimension and write the .msh next to it."""
    msh = geo.with_suffix(".msh")
    gmsh.initialize(readConfigFiles=False, interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("General.NumThreads", 1)  # reproducible output
        gmsh.open(str(geo))
        gmsh.model.mesh.generate(gmsh.model.getDimension())
        gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
        gmsh.option.setNumber("Mesh.Binary", 0)
        gmsh.write(str(msh))
    finally:
        gmsh.finalize()
    return msh


def main(names: list[str]) -> None:
    geos = [MESHES / f"{n}.geo" for n in names] if names else sorted(MESHES.glob("*.geo"))
    for geo in geos:
        msh = make(geo)
        print(f"{msh.relative_to(MESHES.parent)}: {msh.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main(sys.argv[1:])

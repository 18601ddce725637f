"""The storage layer: safe folders, checkpoints, ParaView files, strict JSON/TOML, point files.

* :mod:`~beckmann.store.folder`: manifests and atomic output folders (every command's output).
* :mod:`~beckmann.store.writes`: the one collective helper every write goes through.
* :mod:`~beckmann.store.checkpoint`: exact, per-rank checkpoints that reload on any rank count.
* :mod:`~beckmann.store.paraview`: XDMF + HDF5 (ParaView 5.11) and opt-in VTX files.
* :mod:`~beckmann.store.jsonio`: strict JSON (no NaN tokens) and TOML writing.
* :mod:`~beckmann.store.points`: point sets from ``.npy``/``.csv``.
* :mod:`~beckmann.store.run`: a run folder back as a :class:`~beckmann.fields.Solution`.
"""

from beckmann.store.checkpoint import (
    CHECKPOINT_VERSION,
    Checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from beckmann.store.folder import (
    FOLDER_KINDS,
    MANIFEST,
    check_destination,
    config_hash,
    read_manifest,
    require_kind,
    staged_folder,
    write_manifest,
)
from beckmann.store.jsonio import (
    dumps_json,
    jsonable,
    read_json,
    read_summary,
    toml_dumps,
    write_json,
)
from beckmann.store.paraview import NativeSeries, XdmfSeries, to_vertex_function
from beckmann.store.points import read_points
from beckmann.store.run import load_run
from beckmann.store.writes import (
    before_collective_write,
    write_on_each,
    write_on_root,
)

__all__ = [
    "CHECKPOINT_VERSION",
    "FOLDER_KINDS",
    "MANIFEST",
    "Checkpoint",
    "NativeSeries",
    "XdmfSeries",
    "before_collective_write",
    "check_destination",
    "config_hash",
    "dumps_json",
    "jsonable",
    "load_run",
    "read_checkpoint",
    "read_json",
    "read_manifest",
    "read_points",
    "read_summary",
    "require_kind",
    "staged_folder",
    "to_vertex_function",
    "toml_dumps",
    "write_checkpoint",
    "write_json",
    "write_manifest",
    "write_on_each",
    "write_on_root",
]

"""Hostile-input audit: run many bad inputs through every command, serially and under mpirun.

Usage (about 15-20 min on 2 busy cores; run it in the background, niced)::

    nice .venv/bin/python scripts/hostile_audit.py [--jobs 2] [--ranks 1,2] [--only REGEX]

A workspace of good and damaged inputs is built first (a run folder, a sweep store, a model, bad
configs, points, meshes and run folders). Every case then runs as a subprocess under a timeout
(a hang) and an address-space limit of 8 GiB (an allocation runaway ends in a message or a
traceback, never an out-of-memory kill). Each run is classified:

* ``clean``: exit 1 or 2 and exactly one ``error:`` line (``beckmann: error: ...`` or argparse's
  ``beckmann CMD: error: ...``), with nothing from deep inside Python, PETSc, HDF5 or numpy;
* ``accepted``: exit 0 (listed: a bad value that passes is worth a look; some cases are valid
  on purpose and marked so);
* ``unclean``: a non-zero exit with several error lines or a forbidden fragment;
* ``traceback``: a Python traceback, exit 3 (internal error) or a signal;
* ``hang``: the timeout expired.

``data lost``: a complete run folder (``keep``) is the target of the cases that write into an
existing folder; it is compared file by file with its first state after every run.

The counts are printed at the end (and with ``--json`` as JSON); the exit code is 1 when a hang,
traceback or loss was found.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
LIMIT = 8 * 1024**3
FORBIDDEN = ("Traceback", "HDF5-DIAG", "PETSC ERROR", "allow_pickle", "codec can't decode",
             "MemoryError", "bad_alloc", "Segmentation")  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "BECKMANN_NO_PROGRESS": "1", "JAX_PLATFORMS": "cpu"}


# --------------------------------------------------------------------------------------------
# workspace


def sh(*args: str, cwd: Path) -> None:
    proc = subprocess.run([str(BIN / "beckmann"), *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"workspace step failed: beckmann {' '.join(args)}\n{proc.stderr}")


def build_workspace(w: Path) -> None:
    """Good and damaged inputs in ``w``."""
    rng = np.random.default_rng(12)
    sh("solve", "--set", "mesh.n=6", "--out", "run", cwd=w)
    shutil.copytree(w / "run", w / "keep")
    (w / "sweep.toml").write_text('[mesh]\nn = 4\n[solver]\ndegree = 1\n[target]\nkind = '
                                  '"expression"\nexpr = "1 + theta*x"\n[sweep.parameters]\n'
                                  "theta = { linspace = [0.2, 0.6, 3] }\n")  # fmt: skip
    sh("sweep", "sweep.toml", "--out", "store", "-q", cwd=w)
    sh("fit", "run", "--field", "velocity", "--steps", "2", "--width", "4", "--points", "64",
       "--test-points", "16", "--out", "model", cwd=w)  # fmt: skip
    # damaged runs
    for name, damage in {
        "trunc_h5": lambda d: os.truncate(d / "solution.h5", 1000),
        "trunc_rank": lambda d: os.truncate(d / "checkpoint" / "rank0.h5", 500),
        "garbled_h5": lambda d: _garble(d / "solution.h5", 4000, rng),
        "bad_summary": lambda d: (d / "summary.json").write_text("{ not json"),
        "nan_summary": lambda d: (d / "summary.json").write_text('{"a": NaN}'),
        "list_summary": lambda d: (d / "summary.json").write_text("[1, 2]"),
        "no_summary": lambda d: (d / "summary.json").unlink(),
        "no_checkpoint": lambda d: shutil.rmtree(d / "checkpoint"),
        "no_index": lambda d: (d / "checkpoint" / "checkpoint.json").unlink(),
        "bad_index": lambda d: (d / "checkpoint" / "checkpoint.json").write_text('{"x": 1}'),
        "no_xdmf": lambda d: (d / "solution.xdmf").unlink(),
        "bad_xdmf": lambda d: (d / "solution.xdmf").write_text("<Xdmf><oops"),
        "bad_config": lambda d: (d / "config.toml").write_bytes(b"\xff\xfe[["),
        "no_manifest": lambda d: (d / "beckmann.json").unlink(),
        "bad_manifest": lambda d: (d / "beckmann.json").write_text('{"kind": "sweep"}'),
        "empty_rank": lambda d: (d / "checkpoint" / "rank0.h5").write_bytes(b""),
    }.items():
        shutil.copytree(w / "run", w / name)
        damage(w / name)
    (w / "empty_dir").mkdir()
    (w / "a_file").write_text("x")
    shutil.copytree(w / "store", w / "store_trunc")
    for h5 in (w / "store_trunc").rglob("*.h5"):
        os.truncate(h5, h5.stat().st_size // 2)
    shutil.copytree(w / "store", w / "store_badjson")
    (w / "store_badjson" / "sweep.json").write_text("{ broken")
    # points
    pts = {
        "good": np.array([[0.5, 0.5]]), "outside": np.array([[1.0000005, 0.5]]),
        "nan": np.array([[np.nan, 0.5]]), "inf": np.array([[np.inf, 0.5]]),
        "three": np.array([[0.5, 0.5, 0.5]]), "one": np.array([[0.5]]),
        "empty": np.zeros((0, 2)), "flat": np.array([0.5, 0.5]), "cube": np.zeros((1, 2, 2)),
        "strings": np.array([["a", "b"]]), "complex": np.array([[0.5 + 1j, 0.5]]),
        "bools": np.array([[True, False]]), "far": np.array([[1e300, -1e300]]),
    }  # fmt: skip
    for k, v in pts.items():
        np.save(w / f"pts_{k}.npy", v)
    np.save(w / "pts_obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (w / "pts_text.npy").write_text("0.5 0.5\n")
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 2)))
    header["shape"] = (10**11, 2)
    with open(w / "pts_huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)
    header["shape"] = (1000, 2)
    with open(w / "pts_trunc.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)
    (w / "pts_bin.csv").write_bytes(rng.integers(0, 256, 512, dtype=np.uint8).tobytes())
    (w / "pts_words.csv").write_text("a,b\nc,d\n")
    (w / "pts_ragged.csv").write_text("0.5,0.5\n0.5\n")
    (w / "pts_empty.csv").write_text("")
    (w / "pts.json").write_text("[[0.5, 0.5]]")
    os.mkfifo(w / "fifo.npy")
    os.mkfifo(w / "fifo.toml")
    # configs
    (w / "random.toml").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    cfgs = {
        "invalid": "[mesh\nn = 3", "unknown_section": "[foo]\na = 1",
        "unknown_key": "[mesh]\nnn = 3", "wrong_type": '[mesh]\nn = "three"',
        "not_table": "mesh = 3", "nested": "a = " + "[" * 5000 + "]" * 5000,
        "dup": "[mesh]\nn = 3\nn = 4", "empty": "", "bom": "\ufeff[mesh]\nn = 3",
        "sweep_empty": "[target]\nkind = 'expression'\nexpr = '1+theta*x'\n[sweep.parameters]\n",
        "sweep_unknown": "[target]\nkind = 'expression'\nexpr = '1+x'\n[sweep.parameters]\n"
        "theta = [0.1, 0.2]\n",
    }  # fmt: skip
    for k, v in cfgs.items():
        (w / f"cfg_{k}.toml").write_text(v)
    with open(w / "cfg_big.toml", "wb") as f:
        f.truncate(20 * 1024**2)
    # meshes
    msh = {
        "script": 'SystemCall "touch pwned";\nPoint(1) = {0, 0, 0};\n',
        "ws_script": '\n   \nSystemCall "touch pwned";\n',
        "empty": "", "header_only": "$MeshFormat\n4.1 0 8\n$EndMeshFormat\n",
        "truncated": "$MeshFormat\n4.1 0 8\n$EndMeshFormat\n$Nodes\n1 4 1 4\n2 1 0 4\n1\n",
        "garbage": "$MeshFormat\n4.1 0 8\n$EndMeshFormat\n" + "x" * 200,
    }  # fmt: skip
    for k, v in msh.items():
        (w / f"mesh_{k}.msh").write_text(v)
    (w / "mesh_binary.msh").write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    shutil.copy(ROOT / "meshes" / "disk.msh", w / "disk.msh")
    (w / "mesh_missing_h5.xdmf").write_text(
        (w / "run" / "solution.xdmf").read_text())  # points at mesh_missing_h5.h5
    shutil.copy(w / "run" / "solution.xdmf", w / "mesh_trunc.xdmf")
    shutil.copy(w / "trunc_h5" / "solution.h5", w / "mesh_trunc.h5")
    # densities
    np.save(w / "img_nan.npy", np.full((4, 4), np.nan))
    np.save(w / "img_str.npy", np.array([["a"]]))
    np.save(w / "img_neg.npy", -np.ones((4, 4)))
    np.save(w / "img_3d.npy", np.ones((2, 2, 2, 2)))
    (w / "img_text.png").write_text("not a png")
    # models
    for name in ("text", "member", "garbage_json", "nan"):
        shutil.copy(w / "model.json", w / f"model_{name}.json")
    (w / "model_text.npz").write_text("W0 = [1]\n")
    with zipfile.ZipFile(w / "model_member.npz", "w") as zf:
        zf.writestr("W0.npy", "text member")
    shutil.copy(w / "model.npz", w / "model_garbage_json.npz")
    (w / "model_garbage_json.json").write_text("{]")
    weights = dict(np.load(w / "model.npz"))
    weights = {k: np.full_like(v, np.nan) for k, v in weights.items()}
    np.savez(w / "model_nan.npz", **weights)


def _garble(path: Path, offset: int, rng: np.random.Generator) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


# --------------------------------------------------------------------------------------------
# cases: (name, argv, valid) -- valid cases may exit 0


def S(*sets: str) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def cases() -> list[tuple[str, list[str], bool]]:
    out: list[tuple[str, list[str], bool]] = []

    def add(name: str, argv: list[str], valid: bool = False) -> None:
        out.append((name, argv, valid))

    solve = ["solve", "--out", "new_run%U"]
    for v in ("0", "-1", "1.5", "'abc'", "true", "100000", "[3]", "{a=1}"):
        add(f"solve mesh.n={v}", solve + S(f"mesh.n={v}"))
    for v in ("0", "-0.1", "nan", "inf", "1e-7", "'x'"):
        add(f"solve disk mesh.h={v}", solve + S("mesh.kind='disk'", f"mesh.h={v}"))
    add("solve mesh.kind=torus", solve + S("mesh.kind='torus'"))
    for f in ("missing.msh", "mesh_script.msh", "mesh_ws_script.msh", "mesh_empty.msh",
              "mesh_header_only.msh", "mesh_truncated.msh", "mesh_garbage.msh",
              "mesh_binary.msh", "fifo.toml", "/dev/zero", "empty_dir", "run/solution.h5",
              "mesh_missing_h5.xdmf", "mesh_trunc.xdmf", "a_file"):  # fmt: skip
        add(f"solve mesh file {f}", solve + S("mesh.kind='file'", f"mesh.path='{f}'"))
    add("solve mesh.cells=[99]", solve + S("mesh.kind='file'", "mesh.path='disk.msh'",
                                         "mesh.cells=[99]"))  # fmt: skip
    add("solve mesh.cells on unit_square", solve + S("mesh.cells=[1]"))
    add("solve mesh.cells=['x', 1.5]", solve + S("mesh.kind='file'", "mesh.path='disk.msh'",
                                                 "mesh.cells=[1.5]"))  # fmt: skip
    for v in ("0", "4", "-1", "'p2'", "1.0"):
        add(f"solve solver.degree={v}", solve + S(f"solver.degree={v}"))
    for v in ("'lu'", "3"):
        add(f"solve solver.method={v}", solve + S(f"solver.method={v}"))
    for v in ("-1", "0", "nan", "1e300"):
        add(f"solve solver.rtol={v}", solve + S("mesh.n=4", f"solver.rtol={v}"))
    for v in ("-5", "1000"):
        add(f"solve quadrature_degree={v}", solve + S("mesh.n=4", f"solver.quadrature_degree={v}"))
    for v in ('{pc_type="bogus"}', '{ksp_type="bogus"}', '{pc_gamg_type="no"}',
              '{ksp_max_it=1}', '{pc_type="none", ksp_max_it=2}', "{a={b=1}}", "3"):
        add(f"solve petsc_options={v}", solve + S("mesh.n=8", f"solver.petsc_options={v}"))
    add("solve formulation=foo", solve + S("solver.formulation='foo'"))
    exprs = ["", "x+", "__import__('os').system('touch pwned')", "x.__class__", "().__class__",
             "x**1e10", "exp(1000*x)", "1/x", "1/(x-0.5)", "log(x-1)", "sqrt(-1-x)", "z", "t",
             "theta", "1e309", "nan", "inf", "x if x else y", "[x]", "lambda: 1", "x; y",
             "(" * 500 + "x" + ")" * 500, "+".join(["x"] * 5000), "2**2**2**2**2**2",
             "9" * 400, "abs", "sin(x, y)", "x @ y", "'a'", "1 + x" + " " * 20000]  # fmt: skip
    for i, e in enumerate(exprs):
        add(f"solve target.expr #{i} {e[:30]!r}",
            solve + S("mesh.n=4", "target.kind='expression'") + ["--set", f"target.expr={e}"])
    add("solve flat sum 402", solve + S("mesh.n=4", "target.kind='expression'")
        + ["--set", "target.expr=" + "+".join(["x"] * 402) + " + 1e9"], True)
    for v in ("{a='s'}", "{a=nan}", "{x=1}", "3", "{a=[1]}"):
        add(f"solve target.params={v}",
            solve + S("target.kind='expression'", "target.expr='1+a*x'", f"target.params={v}"))
    for sets in (["source.min_density=-1", "source.kind='expression'", "source.expr='x-0.5'"],
                 ["source.min_density=nan"], ["source.floor=-1"], ["source.floor=nan"],
                 ["target.kind='expression'", "target.expr='x-0.5'"],
                 ["target.kind='expression'", "target.expr='0*x'", "target.min_density=0"],
                 ["target.kind='expression'", "target.expr='1e-300'", "target.min_density=0"]):
        add(f"solve {' '.join(sets)}", solve + S("mesh.n=4", *sets))
    gm = "target.kind='gaussian_mixture'"
    for sets in (["target.weights=[-1]", "target.means=[[0.5,0.5]]", "target.covariances=[0.1]"],
                 ["target.weights=[]"], ["target.weights=[1]", "target.means=[[0.5]]",
                                         "target.covariances=[0.1]"],
                 ["target.weights=[1]", "target.means=[[0.5,0.5]]", "target.covariances=[-1]"],
                 ["target.weights=[1]", "target.means=[[0.5,0.5]]",
                  "target.covariances=[[[1,2],[2,1]]]"],
                 ["target.weights=[1e308, 1e308]", "target.means=[[0.5,0.5],[0.2,0.2]]",
                  "target.covariances=[0.1, 0.1]"]):  # fmt: skip
        add(f"solve mixture #{len(out)} {' '.join(sets)[:50]}", solve + S("mesh.n=4", gm, *sets))
    for f in ("missing.png", "img_text.png", "img_nan.npy", "img_str.npy", "img_neg.npy",
              "img_3d.npy", "/dev/zero", "fifo.npy", "pts_huge.npy", "pts_text.npy"):
        add(f"solve image {f}", solve + S("mesh.n=4", "target.kind='image'", f"target.path='{f}'"))
    for f in ("missing.npy", "pts_text.npy", "pts_obj.npy", "pts_nan.npy", "pts_empty.npy",
              "pts_three.npy", "pts_huge.npy"):
        add(f"solve samples {f}", solve + S("mesh.n=4", "target.kind='samples'",
                                            f"target.path='{f}'"))  # fmt: skip
    for f in ("missing", "trunc_h5", "bad_summary", "a_file", "store"):
        add(f"solve function {f}", solve + S("mesh.n=4", "target.kind='function'",
                                             f"target.path='{f}'"))  # fmt: skip
    for v in ("[2]", "['a']", "[nan]", "3", "[-0.1]"):
        add(f"solve output.times={v}", solve + S("mesh.n=4", f"output.times={v}"))
    for cfg in ("random.toml", "/dev/zero", "fifo.toml", "empty_dir", "missing.toml",
                "cfg_big.toml") + tuple(f"cfg_{k}.toml" for k in (
                    "invalid", "unknown_section", "unknown_key", "wrong_type", "not_table",
                    "nested", "dup", "bom")):  # fmt: skip
        add(f"solve config {cfg}", ["solve", cfg, "--out", "new_run%U"])
    for s in ("foo", "mesh.n", "unknown.key=1", "mesh.nn=3", "=3", "mesh..n=3", "a.b.c=1"):
        add(f"solve --set {s}", solve + ["--set", s])
    # writing into existing folders (data-loss checks on keep/)
    add("solve --out keep (no --overwrite)", ["solve", "--out", "keep"] + S("mesh.n=4"))
    add("solve --out keep --overwrite bad expr", ["solve", "--out", "keep", "--overwrite"]
        + S("target.kind='expression'", "target.expr='x-1'"))
    add("solve --out keep --overwrite bad petsc", ["solve", "--out", "keep", "--overwrite"]
        + S("mesh.n=8", "solver.petsc_options={ksp_max_it=1}"))
    for o in ("a_file", "store", "empty_dir/../a_file", "", "/proc/x", "/dev/null"):
        add(f"solve --out {o!r}", ["solve", "--out", o] + S("mesh.n=4"))

    runs = ["missing", "a_file", "empty_dir", "store", "trunc_h5", "trunc_rank", "garbled_h5",
            "bad_summary", "nan_summary", "list_summary", "no_summary", "no_checkpoint",
            "no_index", "bad_index", "no_xdmf", "bad_xdmf", "bad_config", "no_manifest",
            "bad_manifest", "empty_rank", "store_trunc", "store_badjson"]  # fmt: skip
    for i, r in enumerate(runs):
        add(f"probe {r}", ["probe", r, "--points", "pts_good.npy"])
        add(f"holder {r}", ["holder", r])
        add(f"sample {r}", ["sample", r, "--n", "10", "--out", "s%U.npy"])
        if i % 3 == 0:  # fit imports JAX (slow to start): every third damaged folder
            add(f"fit {r}", ["fit", r, "--steps", "2", "--out", "m_new%U"])
        if i % 2 == 0:
            add(f"plot {r}", ["plot", r, "--out", "plots%U", "-q"])
    for p in ("outside", "nan", "inf", "three", "one", "empty", "flat", "cube", "strings",
              "complex", "bools", "far", "obj", "text", "huge", "trunc"):
        add(f"probe points {p}", ["probe", "run", "--points", f"pts_{p}.npy"])
    for p in ("pts_bin.csv", "pts_words.csv", "pts_ragged.csv", "pts_empty.csv", "pts.json",
              "fifo.npy", "/dev/zero", "missing.npy"):
        add(f"probe points {p}", ["probe", "run", "--points", p])
    for t in ("-1", "2", "nan", "x"):
        add(f"probe --time {t}", ["probe", "run", "--points", "pts_good.npy", "--time", t])
    add("probe --param on a run", ["probe", "run", "--points", "pts_good.npy", "--param", "a=1"])
    for prm in ("theta=9", "theta=x", "nope=0.3", "theta"):
        add(f"probe store --param {prm}", ["probe", "store", "--points", "pts_good.npy",
                                           "--param", prm])  # fmt: skip
    add("probe --json-out into a folder", ["probe", "run", "--points", "pts_good.npy",
                                           "--json-out", "empty_dir"])  # fmt: skip
    holder = ["holder", "run"]
    for a in (["--k", "-1"], ["--k", "9"], ["--k", "1000000"], ["--k", "x"], ["--alpha", "0"],
              ["--alpha", "2"], ["--alpha", "nan"], ["--margin", "-1"], ["--margin", "10"],
              ["--delta-min", "-1"], ["--delta-min", "1", "--delta-max", "0.1"],
              ["--radius", "-1"], ["--center", "a,b"], ["--center", "0.5"], ["--time", "3"],
              ["--field", "bogus"], ["--field", "hessian", "--k", "5"],
              ["--plot", "empty_dir"], ["--json-out", "/proc/x"]):  # fmt: skip
        add(f"holder {' '.join(a)}", holder + a)
    study = ["study", "--out", "study_out%U"]
    for a in (["--levels", "0"], ["--levels", "-2"], ["--levels", "100"], ["--levels", "x"],
              ["--levels", "2", "--refine", "q"], ["--levels", "2", "--expect", "bogus"],
              ["--levels", "2", "--alpha", "0"], ["--levels", "2", "random.toml"],
              ["--levels", "2", "--set", "mesh.n=100000", "--refine", "n"],
              ["--levels", "2", "--fields", "nope"]):  # fmt: skip
        add(f"study {' '.join(a)}", study + a)
    add("study --out keep", ["study", "--levels", "2", "--out", "keep"])
    for k in SWEEP_GRIDS:
        add(f"sweep grid {k}", ["sweep", f"sweep_{k}.toml", "--out", "new_store%U", "-q"])
    for a in (["--group-size", "-1"], ["--group-size", "3"], ["--set", "sweep.block=0"],
              ["--set", "sweep.holder_alpha=2"], ["--set", "sweep.method='nope'"],
              ["--set", "sweep.joint_points=-1"], ["--resume"]):
        add(f"sweep {' '.join(a)}", ["sweep", "sweep.toml", "--out", "new_store2%U", "-q", *a])
    add("sweep --out keep", ["sweep", "sweep.toml", "--out", "keep", "-q"])
    add("sweep --out keep --overwrite bad grid", ["sweep", "sweep_strings.toml", "--out", "keep",
                                                  "--overwrite", "-q"])  # fmt: skip
    add("sweep --resume run", ["sweep", "sweep.toml", "--out", "run", "--resume", "-q"])
    smp = ["sample", "run", "--out", "s%U.npy"]
    for a in (["--n", "0"], ["--n", "-5"], ["--n", "1e12"], ["--n", "1000000000000"],
              ["--n", "10", "--steps", "0"], ["--n", "10", "--seed", "-1"],
              ["--n", "10", "--save-every", "0"], ["--n", "10", "--save-every", "-1"],
              ["--n", "10", "--bins", "0"], ["--n", "10", "--energy-points", "1"],
              ["--n", "10", "--rtol", "-1"], ["--n", "10", "--grid", "0", "--path", "fisher-rao"],
              ["--n", "10", "--path", "foo"], ["--n", "10", "--model", "missing"],
              ["--n", "10", "--model", "model_text"], ["--n", "10", "--model", "model_member"],
              ["--n", "10", "--model", "model_garbage_json"], ["--n", "10", "--model", "model_nan"],
              ["--n", "10", "--param", "a=1"], ["--init", "pts_text.npy"],
              ["--init", "pts_three.npy"], ["--init", "pts_outside.npy"],
              ["--n", "10", "--init", "pts_good.npy"], ["--n", "10", "--steps", "100000000"],
              ["--n", "10", "--save-every", "1", "--steps", "100000000"]):  # fmt: skip
        add(f"sample {' '.join(a)}", smp + a)
    add("sample --out x.txt", ["sample", "run", "--n", "10", "--out", "x%U.txt"])
    add("sample --out keep/summary.npy", ["sample", "run", "--n", "10", "--out", "keep/x.npy"],
        True)
    fit = ["fit", "run", "--out", "m_new%U", "--steps", "2"]
    for a in (["--width", "0"], ["--width", "1000000"], ["--depth", "0"], ["--depth", "100000"],
              ["--steps", "0"], ["--lr", "-1"], ["--lr", "nan"], ["--seed", "-1"],
              ["--points", "0"], ["--points", "10000000000"], ["--field", "foo"],
              ["--activation", "foo"], ["--dtype", "foo"], ["--time", "2"], ["--alpha", "0"],
              ["--batch-size", "0"], ["--test-points", "0"], ["--uniform-fraction", "2"],
              ["--sampling", "foo"], ["--time-input"], ["--json-out", "m_new%U.json"],
              ["--platform", "tpu"]):  # fmt: skip
        add(f"fit {' '.join(a)}", fit + a)
    add("fit --out keep/summary", ["fit", "run", "--steps", "2", "--out", "keep/summary"])
    for m in ("missing", "model_text", "model_member", "model_garbage_json", "model_nan",
              "run", "a_file"):
        add(f"export {m}", ["export", m, "--out", "exp_new%U"])
    add("export --to foo", ["export", "model", "--to", "foo", "--out", "exp_new%U"])
    add("export --out keep/summary", ["export", "model", "--out", "keep/summary"])
    for a in (["--param", "a=1"], ["--samples", "pts_text.npy"], ["--samples", "pts_three.npy"],
              ["--holder", "random.toml"], ["--holder", "missing.json"],
              ["--backend", "foo"], ["--out", "a_file"]):  # fmt: skip
        add(f"plot {' '.join(a)}", ["plot", "run", "-q", *a] + ([] if "--out" in a else
                                                                  ["--out", "plots%U"]))
    add("plot store (no --param)", ["plot", "store", "--out", "plots%U", "-q"])
    for a in (["--holder", "/dev/zero"], ["--holder", "fifo.toml"], ["--holder", "pts_bin.csv"],
              ["--holder", "empty_dir"], ["--samples", "pts_obj.npy"],
              ["--samples", "pts_huge.npy"], ["--samples", "fifo.npy"],
              ["--samples", "pts_nan.npy"]):  # fmt: skip
        add(f"plot {' '.join(a)}", ["plot", "run", "-q", "--out", "plots%U", *a])
    add("solve target.expr free name 'a'", solve + ["--set", 'target.expr="a"'])
    add("solve target.expr free name '1+b*x'", solve + ["--set", 'target.expr="1+b*x"'])
    study_cfg = ["study", "--levels", "2", "--set", "mesh.n=8"]
    for a in (["--out", "run"], ["--out", "run/sub"], ["--out", "a_file"],
              ["--refine", "h", "--out", "study_out%U"]):
        add(f"study {' '.join(a)}", study_cfg + a)
    add("solve --bogus (usage)", ["solve", "--bogus"])
    add("sample (usage: no dir)", ["sample"])
    for a in (["--grid", "0"], ["--grid", "-1"], ["--grid", "100000000"]):
        add(f"paths {' '.join(a)}", ["paths", "run", *a])
    add("paths missing", ["paths", "missing"])
    add("config extra", ["config", "extra"])
    add("no command", [])
    add("unknown command", ["frobnicate"])
    return out


SWEEP_GRIDS = {
    "empty": "", "1e8": "theta = { linspace = [0.3, 0.7, 100000000] }",
    "product": "theta = { linspace = [0.3, 0.7, 100000] }\ns = { linspace = [1, 2, 100000] }",
    "neg": "theta = { linspace = [0.3, 0.7, -3] }", "bool": "theta = { linspace = [0, 1, true] }",
    "strings": "theta = ['a', 'b']", "repeat": "theta = [0.3, 0.3]",
    "lhs": "theta = { lhs = [0, 1, 4] }\ns = { lhs = [0, 1, 5] }",
    "random": "theta = { random = [1, 0, 3] }", "seed": "theta = { random = [0, 1, 3], seed = -1 }",
    "keys": "theta = { linspace = [0, 1, 3], step = 2 }", "reserved": "x = [1, 2]",
    "unused": "theta = [0.3]\nfoo = [1, 2]", "nan": "theta = [nan]",
    "count_float": "theta = { linspace = [0, 1, 3.5] }",
}  # fmt: skip


def write_sweep_configs(w: Path) -> None:
    base = ('[mesh]\nn = 4\n[solver]\ndegree = 1\n[target]\nkind = "expression"\n'
            'expr = "1 + theta*s*x"\n[target.params]\ns = 1.0\n[sweep.parameters]\n')
    for k, g in SWEEP_GRIDS.items():
        (w / f"sweep_{k}.toml").write_text(base + g + "\n")


# --------------------------------------------------------------------------------------------
# running and classifying


def classify(proc: subprocess.CompletedProcess | None, valid: bool) -> str:
    if proc is None:
        return "hang"
    err = proc.stderr
    if "Traceback" in err or proc.returncode == 3 or proc.returncode < 0 or proc.returncode > 128:
        return "traceback"
    if proc.returncode == 0:
        return "valid" if valid else "accepted"
    lines = [ln for ln in err.splitlines() if re.match(r"^beckmann( \w+)?: (error|internal)", ln)]
    if proc.returncode in (1, 2) and len(lines) == 1 and not any(f in err for f in FORBIDDEN):
        return "clean"
    return "unclean"


def run_case(w: Path, argv: list[str], ranks: int, timeout: float, uid: str):
    cmd = [str(BIN / "beckmann"), *(a.replace("%U", uid) for a in argv)]
    if ranks > 1:
        cmd = [str(BIN / "mpirun"), "-n", str(ranks), *cmd]
    cmd = ["prlimit", f"--as={LIMIT}", *cmd]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=w, env=ENV, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, start_new_session=True)
    except subprocess.TimeoutExpired:
        proc = None
    return proc, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--only", help="regex on case names")
    ap.add_argument("--stride", type=int, default=1, help="run every STRIDE-th case only")
    ap.add_argument("--keep", action="store_true", help="keep the workspace")
    ap.add_argument("--log", help="write the output of every run that is not clean here")
    ap.add_argument("--json", action="store_true", help="print the counts as JSON too")
    args = ap.parse_args()
    w = Path(tempfile.mkdtemp(prefix="beckmann-audit-"))
    t0 = time.monotonic()
    print(f"workspace {w}", file=sys.stderr, flush=True)
    build_workspace(w)
    write_sweep_configs(w)
    keep0 = snapshot(w / "keep")
    chosen = [c for c in cases() if not args.only or re.search(args.only, c[0])]
    todo = [(n, a, v, r) for n, a, v in chosen[:: max(args.stride, 1)]
            for r in map(int, args.ranks.split(","))]  # fmt: skip
    counts = {k: 0 for k in ("clean", "valid", "accepted", "unclean", "traceback", "hang")}
    findings: list[str] = []
    lost: list[str] = []
    lock = threading.Lock()

    def one(numbered):
        i, (name, argv, valid, ranks) = numbered
        proc, secs = run_case(w, argv, ranks, args.timeout, f"_{i}")
        kind = classify(proc, valid)
        with lock:
            counts[kind] += 1
            now = snapshot(w / "keep")
            if any(now.get(k) != v for k, v in keep0.items()):
                lost.append(f"{name} (-n {ranks})")
                shutil.rmtree(w / "keep", ignore_errors=True)
                shutil.copytree(w / "run", w / "keep")
            if kind not in ("clean", "valid"):
                tail = "" if proc is None else (proc.stderr.strip().splitlines() or [""])[-1][:200]
                findings.append(f"{kind:9s} -n {ranks} {name}: {tail}")
                if args.log and proc is not None:
                    log = Path(args.log) / f"{i:04d}-n{ranks}.txt"
                    log.parent.mkdir(parents=True, exist_ok=True)
                    log.write_text(f"{name}\n{' '.join(argv)}\nexit {proc.returncode}\n"
                                   f"--- stdout\n{proc.stdout[-5000:]}\n--- stderr\n"
                                   f"{proc.stderr[-20000:]}")  # fmt: skip
            done = sum(counts.values())
            print(f"[{done}/{len(todo)}] {kind:9s} {secs:5.1f}s -n {ranks} {name}",
                  file=sys.stderr, flush=True)

    with cf.ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        list(pool.map(one, enumerate(todo)))
    if (w / "pwned").exists():
        findings.append("SECURITY: a mesh script ran (pwned exists)")
    names = {n for n, *_ in todo}
    summary = {
        "inputs": len(names), "runs": len(todo), "clean_errors": counts["clean"],
        "valid_runs": counts["valid"], "accepted_exit_0": counts["accepted"],
        "unclean_errors": counts["unclean"], "tracebacks": counts["traceback"],
        "hangs": counts["hang"], "data_lost": len(lost),
        "minutes": round((time.monotonic() - t0) / 60, 1),
    }  # fmt: skip
    print("\n".join(sorted(findings)))
    for item in lost:
        print(f"data lost: {item}")
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    if args.json:
        print(json.dumps(summary))
    if not args.keep:
        shutil.rmtree(w, ignore_errors=True)
    return 1 if counts["traceback"] or counts["hang"] or lost else 0


if __name__ == "__main__":
    sys.exit(main())

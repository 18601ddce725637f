"""Hostile and unlucky input to every command: one clear line on every rank, no traceback, no hang.

Each case runs the CLI as a subprocess, serially and under ``mpirun -n 2``, under a timeout (a
hang fails the test) and an address-space limit (a runaway allocation fails with a message, not
an out-of-memory kill of the CI machine). A case passes when the command exits non-zero with
exactly one ``beckmann: error:`` line that matches the expected text and names the offending
file or option, and nothing from deep inside PETSc, HDF5 or Python.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import numpy as np
import pytest
from conftest import BIN, MPIRUN, ROOT

pytestmark = pytest.mark.serial

MEMORY_LIMIT = 8 * 1024**3  # per process, bytes
FORBIDDEN = ("Traceback", "HDF5-DIAG", "PETSC ERROR", "allow_pickle", "codec can't decode")


def run(*args: str, ranks: int = 1, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "beckmann"), *args]
    if ranks > 1:
        cmd = [MPIRUN, "-n", str(ranks), *cmd]
    cmd = ["prlimit", f"--as={MEMORY_LIMIT}", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BECKMANN_NO_PROGRESS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=cwd or ROOT, stdin=subprocess.DEVNULL)


def one_clean_line(proc: subprocess.CompletedProcess, match: str) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert proc.returncode in (1, 2), (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("beckmann:")]
    assert len(lines) == 1, proc.stderr
    for bad in FORBIDDEN:
        assert bad not in proc.stderr, proc.stderr
    assert re.search(match, lines[0]), lines[0]
    return lines[0]


def strict_json(text: str):
    def reject(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "run"
    proc = run("solve", "--set", "mesh.n=6", "--set", "solver.degree=1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


SOLVE_CASES = {
    "min_density_negative": (
        ["--set", "source.kind=expression", "--set", "source.expr=x - 0.5",
         "--set", "source.min_density=-1"],
        r"source\.min_density|non-positive total mass|negative"),
    "flat_sum_is_not_nesting": (
        ["--set", "target.kind=expression",
         "--set", "target.expr=" + "+".join(["x"] * 402) + " + 1e9"],
        None),  # valid: must solve
}


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("case", sorted(SOLVE_CASES))
def test_solve_hostile(tmp_path, case, ranks):
    args, match = SOLVE_CASES[case]
    proc = run("solve", "--set", "mesh.n=4", *args, "--out", str(tmp_path / "r"), ranks=ranks)
    if match is None:
        assert proc.returncode == 0, proc.stderr
        assert "nested" not in proc.stderr
        return
    one_clean_line(proc, match)


@pytest.mark.parametrize("ranks", [1, 2])
def test_config_files_that_are_not_files(tmp_path, ranks):
    rnd = tmp_path / "random.toml"
    rnd.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    one_clean_line(run("solve", str(rnd), ranks=ranks), r"random\.toml.*UTF-8")
    one_clean_line(run("solve", "/dev/zero", ranks=ranks), r"/dev/zero.*not a regular file")
    one_clean_line(run("solve", str(tmp_path), ranks=ranks), r"is a folder")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    one_clean_line(run("solve", str(fifo), ranks=ranks, timeout=60), r"fifo\.toml.*regular")


@pytest.mark.parametrize("ranks", [1, 2])
def test_tiny_mesh_solves_without_hanging(tmp_path, ranks):
    # two triangles: a valid Neumann problem; small problems go to a direct solver
    outs = {}
    for method in ("default", "mumps"):
        extra = [] if method == "default" else ["--set", "solver.method=mumps"]
        out = tmp_path / method
        proc = run("solve", "--set", "mesh.n=1", "--set", "solver.degree=1", *extra,
                   "--out", str(out), ranks=ranks, timeout=90)
        assert proc.returncode == 0, proc.stderr
        outs[method] = json.loads((out / "summary.json").read_text())["beckmann_cost"]
    assert outs["default"] == pytest.approx(outs["mumps"], rel=1e-10, abs=1e-14)
    for n in (2, 3):
        proc = run("solve", "--set", f"mesh.n={n}", "--out", str(tmp_path / f"n{n}"),
                   ranks=ranks, timeout=90)
        assert proc.returncode == 0, proc.stderr


def test_msh_with_leading_whitespace_is_never_a_script(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.msh"
    bad.write_text(f'\n  \nSystemCall "touch {marker}";\nPoint(1) = {{0, 0, 0}};\n')
    for ranks in (1, 2):
        proc = run("solve", "--set", "mesh.kind=file", "--set", f"mesh.path={bad}",
                   "--out", str(tmp_path / "r"), ranks=ranks)
        one_clean_line(proc, r"evil\.msh")
        assert not marker.exists()


def test_holder_k_beyond_the_space(run_dir):
    proc = run("holder", str(run_dir), "--k", "9", timeout=60)
    one_clean_line(proc, r"--k|k = 9|\bk\b")


@pytest.mark.parametrize("ranks", [1, 2])
def test_probe_hostile_points(tmp_path, run_dir, ranks):
    s = tmp_path / "strings.npy"
    np.save(s, np.array([["a", "b"]]))
    one_clean_line(run("probe", str(run_dir), "--points", str(s), ranks=ranks),
                   r"strings\.npy.*real numbers")
    c = tmp_path / "complex.npy"
    np.save(c, np.array([[0.5 + 1j, 0.5]]))
    one_clean_line(run("probe", str(run_dir), "--points", str(c), ranks=ranks),
                   r"complex\.npy.*real numbers")
    o = tmp_path / "outside.npy"
    np.save(o, np.array([[1.0000005, 0.5]]))
    one_clean_line(run("probe", str(run_dir), "--points", str(o), ranks=ranks),
                   r"outside.*1\.0000005")


def test_bad_summary_json_names_the_file(tmp_path, run_dir):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "summary.json").write_text("{ not json")
    pts = tmp_path / "p.npy"
    np.save(pts, np.array([[0.5, 0.5]]))
    for cmd in (["probe", str(copy), "--points", str(pts)], ["holder", str(copy)]):
        one_clean_line(run(*cmd), r"summary\.json")


# ---------------------------------------------------------------------------------------------
# memory: every request is estimated before it is allocated (run under the 8 GiB limit)


@pytest.mark.parametrize("ranks", [1, 2])
def test_memory_solve_mesh_n(tmp_path, ranks):
    proc = run("solve", "--set", "mesh.n=100000", "--out", str(tmp_path / "r"), ranks=ranks,
               timeout=90)
    one_clean_line(proc, r"mesh\.n = 100000.*GiB of memory, more than the .* GiB available; "
                         r"lower mesh\.n")
    assert not (tmp_path / "r").exists()


SWEEP_GRIDS = {
    "linspace_1e8": ("theta = { linspace = [0.3, 0.7, 100000000] }", r"1e\+08 θ \(theta"),
    "product_1e5x1e5": (
        "theta = { linspace = [0.3, 0.7, 100000] }\ns = { linspace = [1.0, 2.0, 100000] }",
        r"1e\+10 θ \(theta 100000 x s 100000\)",
    ),
}


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("grid", sorted(SWEEP_GRIDS))
def test_memory_sweep_grid_is_sized_before_it_is_built(tmp_path, grid, ranks):
    entries, match = SWEEP_GRIDS[grid]
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('[mesh]\nn = 4\n[target]\nkind = "expression"\nexpr = "1 + theta*s*x"\n'
                   f"[target.params]\ns = 1.0\n[sweep.parameters]\n{entries}\n")
    proc = run("sweep", str(cfg), "--out", str(tmp_path / "st"), ranks=ranks, timeout=90)
    one_clean_line(proc, match + r".*lower the counts in \[sweep\.parameters\]")


def test_memory_sample_and_fit(run_dir, tmp_path):
    one_clean_line(run("sample", str(run_dir), "--n", "1000000000000",
                       "--out", str(tmp_path / "s.npy"), timeout=90),
                   r"--n 1000000000000.*GiB.*lower --n")
    one_clean_line(run("fit", str(run_dir), "--width", "1000000", "--out", str(tmp_path / "m"),
                       timeout=120),
                   r"--width 1000000.*GiB of memory.*lower --width")


def test_memory_npy_declaring_a_huge_array(run_dir, tmp_path):
    huge = tmp_path / "huge.npy"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 2)))
    header["shape"] = (10**11, 2)
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)
    one_clean_line(run("probe", str(run_dir), "--points", str(huge)),
                   r"huge\.npy.*shape \(100000000000, 2\).*GiB")


# ---------------------------------------------------------------------------------------------
# messages that name the file or option


@pytest.mark.parametrize("ranks", [1, 2])
def test_truncated_hdf5_is_named(tmp_path, run_dir, ranks):
    import shutil

    pts = tmp_path / "p.npy"
    np.save(pts, np.array([[0.5, 0.5]]))
    # a P1 run's checkpoint refers to solution.h5 (no rank files; those are damaged at P2 in
    # tests/test_checkpoint.py)
    for name in ("solution.h5",):
        copy = tmp_path / name.replace("/", "_")
        shutil.copytree(run_dir, copy)
        path = copy / name
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
        for cmd in (["probe", str(copy), "--points", str(pts)], ["holder", str(copy)]):
            one_clean_line(run(*cmd, ranks=ranks), re.escape(name) + r"' is damaged or truncated")


def test_seeds_and_counts_name_the_option(run_dir, tmp_path):
    out = str(tmp_path / "s.npy")
    one_clean_line(run("sample", str(run_dir), "--n", "10", "--seed", "-1", "--out", out),
                   r"--seed must be a non-negative integer, got -1")
    one_clean_line(run("sample", str(run_dir), "--n", "10", "--save-every", "0", "--out", out),
                   r"--save-every must be a positive integer, got 0")
    one_clean_line(run("fit", str(run_dir), "--seed", "-1", "--out", str(tmp_path / "m")),
                   r"--seed must be a non-negative integer, got -1")


@pytest.mark.parametrize("ranks", [1, 2])
def test_points_files_that_are_not_arrays_of_numbers(run_dir, tmp_path, ranks):
    text = tmp_path / "text.npy"
    text.write_text("0.5 0.5\n")
    one_clean_line(run("probe", str(run_dir), "--points", str(text), ranks=ranks),
                   r"text\.npy' is not a NumPy \.npy file")
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    one_clean_line(run("probe", str(run_dir), "--points", str(obj), ranks=ranks),
                   r"obj\.npy' holds Python objects")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00 garbage")
    one_clean_line(run("probe", str(run_dir), "--points", str(binary), ranks=ranks),
                   r"binary\.csv' is not UTF-8")


def test_text_npz_model(run_dir, tmp_path):
    import shutil
    import zipfile

    good = tmp_path / "good"
    proc = run("fit", str(run_dir), "--steps", "2", "--width", "4", "--points", "64",
               "--test-points", "16", "--out", str(good), timeout=180)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "text.npz").write_text("W0 = [1, 2]\n")
    with zipfile.ZipFile(tmp_path / "member.npz", "w") as zf:
        zf.writestr("W0.npy", "a text member\n")
    for name in ("text", "member"):
        shutil.copy(tmp_path / "good.json", tmp_path / f"{name}.json")
        model = str(tmp_path / name)
        one_clean_line(run("export", model, "--out", str(tmp_path / "e")), rf"{name}\.npz")
        one_clean_line(run("sample", str(run_dir), "--n", "10", "--model", model,
                           "--out", str(tmp_path / "s.npy")), rf"{name}\.npz")


@pytest.mark.parametrize("ranks", [1, 2])
def test_solver_set_up_failure_suggests_mumps(tmp_path, ranks):
    proc = run("solve", "--set", "mesh.n=8", "--set", 'solver.petsc_options={pc_gamg_type="no"}',
               "--out", str(tmp_path / "r"), ranks=ranks)
    one_clean_line(proc, r"could not set up the gamg solver.*solver\.method = 'mumps'")


@pytest.mark.parametrize("ranks", [1, 2])
def test_density_files_that_are_not_arrays(tmp_path, ranks):
    text = tmp_path / "text.npy"
    text.write_text("1 2\n3 4\n")
    fifo = tmp_path / "fifo.npy"
    os.mkfifo(fifo)
    for kind in ("image", "samples"):
        for path, match in ((text, r"text\.npy' is not a NumPy \.npy file"),
                            (fifo, r"fifo\.npy' is not a regular file")):
            proc = run("solve", "--set", "mesh.n=4", "--set", f"target.kind='{kind}'",
                       "--set", f"target.path='{path}'", "--out", str(tmp_path / "r"),
                       ranks=ranks, timeout=60)
            one_clean_line(proc, match)


# ---------------------------------------------------------------------------------------------
# command-line usage errors and damaged inputs (issue 12 leftovers)


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("args", [["solve", "--bogus"], ["sample"], ["nosuchcommand"]])
def test_usage_errors_print_once(args, ranks):
    # argparse runs on every rank; only rank 0 may print its usage block and error line
    proc = run(*args, ranks=ranks, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert sum(ln.startswith("usage:") for ln in lines) == 1, proc.stderr
    errors = [ln for ln in lines if re.match(r"beckmann( \w+)?: error: ", ln)]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("ranks", [1, 2])
def test_help_prints_once(ranks):
    proc = run("probe", "--help", ranks=ranks, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("usage: beckmann probe") == 1, proc.stdout


@pytest.mark.parametrize("ranks", [1, 2])
def test_plot_holder_files_that_are_not_holder_json(run_dir, tmp_path, ranks):
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(np.random.default_rng(3).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\x00\x01\x02 binary")
    other = tmp_path / "other.json"
    other.write_text("[1, 2]")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    expected = r"expected the JSON that `beckmann holder --json-out` writes"
    for path, match in ((garbage, r"--holder file '.*garbage\.json' is not UTF-8 text; "),
                        (binary, r"--holder file '.*binary\.json' is not JSON .*; "),
                        (other, r"--holder: no 'scales'/'modulus' pairs found in .*other\.json; "),
                        (fifo, r"--holder file '.*fifo\.json' is not a regular file"),
                        ("/dev/zero", r"--holder file '/dev/zero' is not a regular file")):
        out = tmp_path / "figs"
        proc = run("plot", str(run_dir), "--holder", str(path), "--backend", "matplotlib",
                   "--out", str(out), ranks=ranks, timeout=60)
        line = one_clean_line(proc, match)
        assert "regular file" in line or re.search(expected, line), line
        assert not out.exists()


@pytest.mark.parametrize("ranks", [1, 2])
def test_plot_samples_that_are_not_npy_arrays(run_dir, tmp_path, ranks):
    text = tmp_path / "text.npy"
    text.write_text("0.5 0.5\n0.2 0.3\n")
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[0.5, np.nan]]))
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros(4))
    huge = tmp_path / "huge.npy"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 2)))
    header["shape"] = (10**11, 2)
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
    for path, match in ((text, r"--samples file '.*text\.npy' is not a NumPy \.npy file"),
                        (obj, r"--samples file '.*obj\.npy' holds Python objects"),
                        (nan, r"--samples file '.*nan\.npy' holds NaN"),
                        (flat, r"--samples file '.*flat\.npy' must hold N x 2 points"),
                        (huge, r"--samples file '.*huge\.npy' \(shape \(100000000000, 2\)\)"
                               r".*GiB")):
        out = tmp_path / "figs"
        proc = run("plot", str(run_dir), "--samples", str(path), "--backend", "matplotlib",
                   "--out", str(out), ranks=ranks, timeout=60)
        one_clean_line(proc, match)
        assert not out.exists()


@pytest.mark.parametrize("ranks", [1, 2])
def test_free_name_in_a_set_expression_is_an_error(tmp_path, ranks):
    # the built-in example's params (a, b, s) belong to its own expression, not to a new one
    for expr in ("a", "1 + a*x"):
        out = tmp_path / "r"
        proc = run("solve", "--set", "mesh.n=4", "--set", f'target.expr="{expr}"',
                   "--out", str(out), ranks=ranks, timeout=90)
        one_clean_line(proc, r"target\.expr = '.*' uses 'a', which has no value: give it in "
                             r"target\.params")
        assert not out.exists()
    out = tmp_path / "given"
    proc = run("solve", "--set", "mesh.n=4", "--set", 'target.expr="1 + a*x"',
               "--set", "target.params.a=1", "--out", str(out), ranks=ranks, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert strict_json((out / "summary.json").read_text())["mass_target"] == pytest.approx(1.5)


STUDY_TOML = '[mesh]\nn = 16\n[solver]\ndegree = 1\n[target]\nkind = "expression"\nexpr = "1 + x"\n'


@pytest.mark.parametrize("ranks", [1, 2])
def test_study_hostile_levels_refine_and_out(run_dir, tmp_path, ranks):
    cfg = tmp_path / "study.toml"
    cfg.write_text(STUDY_TOML)
    out = str(tmp_path / "st")
    # 100 levels: refused from level 0's size before level 1 (16 * 2^99 cells per side)
    one_clean_line(run("study", str(cfg), "--levels", "100", "--out", out, ranks=ranks),
                   r"study --levels 100: the finest level \(mesh\.n = 1\.01412e\+31, .*"
                   r"GiB of memory.*lower --levels")
    # halving mesh.h of a unit square would repeat one mesh on every level
    one_clean_line(run("study", str(cfg), "--levels", "2", "--refine", "h", "--out", out,
                       ranks=ranks),
                   r"--refine h changes mesh\.h, which mesh\.kind = 'unit_square' does not use")
    one_clean_line(run("study", str(cfg), "--levels", "2", "--alpha", "-0.5", "--out", out,
                       ranks=ranks), r"alpha must lie in \[0, 1\], got -0\.5")
    assert not (tmp_path / "st").exists()
    # a run folder, or a folder inside one, is not a study's folder: nothing is written there
    before = sorted(p.name for p in run_dir.iterdir())
    for target, match in ((run_dir, r"is a beckmann run folder"),
                          (run_dir / "sub", r"lies inside .*, a beckmann run folder"),
                          (cfg, r"exists and is not a folder")):
        one_clean_line(run("study", str(cfg), "--levels", "2", "--out", str(target),
                           ranks=ranks), r"--out '.*' " + match)
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_study_alpha_zero_is_the_oscillation(tmp_path):
    # α = 0 is a valid seminorm exponent: sup |u(x) - u(y)| over the window, no power of |x - y|
    cfg = tmp_path / "study.toml"
    cfg.write_text(STUDY_TOML)
    out = tmp_path / "st"
    proc = run("study", str(cfg), "--levels", "2", "--alpha", "0", "--fields", "potential",
               "--out", str(out), timeout=180)
    assert proc.returncode == 0, proc.stderr
    res = strict_json((out / "study.json").read_text())
    r = res["levels"][-1]["fields"]["potential"]
    assert r["alpha"] == 0.0
    # p0 = 1, p1 = (1 + x)/1.5: φ'' = ±(0.5 - x)/1.5, φ' = 0 at x = 0, 1, so φ = ±(x²/2 - x³/3)/3
    # and its oscillation (the α = 0 seminorm) is φ(1) - φ(0) = 1/18
    assert r["seminorm"] == pytest.approx(1 / 18, rel=0.01)
    assert [v["n"] for v in res["levels"]] == [16, 32]  # --refine auto doubled mesh.n


@pytest.mark.parametrize("ranks", [1, 2])
def test_probe_empty_points_files(run_dir, tmp_path, ranks):
    files = {"empty.npy": np.zeros((0, 2)), "flat.npy": np.zeros(0)}
    for name, arr in files.items():
        np.save(tmp_path / name, arr)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "comments.txt").write_text("# x y\n# nothing else\n")
    for name in (*files, "empty.csv", "comments.txt"):
        proc = run("probe", str(run_dir), "--points", str(tmp_path / name), ranks=ranks)
        one_clean_line(proc, rf"points file '.*{re.escape(name)}' holds no points")
        assert "Warning" not in proc.stderr, proc.stderr
        assert proc.stdout == "", proc.stdout


def test_damaged_run_folder_files_are_named(tmp_path, run_dir):
    import shutil

    pts = tmp_path / "p.npy"
    np.save(pts, np.array([[0.5, 0.5]]))
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    full = (run_dir / "summary.json").read_bytes()
    (copy / "summary.json").write_bytes(full[: len(full) // 2])  # truncated mid-document
    for cmd in (["probe", str(copy), "--points", str(pts)], ["holder", str(copy)],
                ["sample", str(copy), "--n", "10", "--out", str(tmp_path / "s.npy")]):
        one_clean_line(run(*cmd), r"'.*run/summary\.json' is not valid JSON")
    assert not (tmp_path / "s.npy").exists()
    (copy / "summary.json").write_text("[1, 2]")  # valid JSON, not a summary
    for cmd in (["probe", str(copy), "--points", str(pts)],
                ["fit", str(copy), "--out", str(tmp_path / "net")]):  # fmt: skip
        one_clean_line(run(*cmd), r"'.*run/summary\.json' is damaged: it holds a JSON list")
    assert not (tmp_path / "net").exists()
    # config.toml is what `beckmann solve DIR/config.toml` re-runs; truncated, it is named
    cfg = (run_dir / "config.toml").read_text()
    cut = cfg.index("n = ") + len("n = ")
    (copy / "config.toml").write_text(cfg[:cut])
    for ranks in (1, 2):
        one_clean_line(run("solve", str(copy / "config.toml"), "--out", str(tmp_path / "re"),
                           ranks=ranks),
                       r"config file '.*run/config\.toml' is not valid TOML")
    (copy / "config.toml").unlink()
    one_clean_line(run("solve", str(copy / "config.toml"), "--out", str(tmp_path / "re")),
                   r"config file '.*run/config\.toml' does not exist")
    manifest = (run_dir / "beckmann.json").read_bytes()
    (copy / "beckmann.json").write_bytes(manifest[:30])
    one_clean_line(run("probe", str(copy), "--points", str(pts)), r"run/beckmann\.json'")


ALONE = '''
import argparse, sys
from beckmann import cli

fail_rank, wait = int(sys.argv[1]), sys.argv[2]


def handler(args, comm):
    if comm.rank == fail_rank:
        raise ValueError(f"bad on rank {comm.rank} only")
    if wait == "barrier":
        comm.barrier()
    elif wait == "bcast":
        comm.bcast(None, root=fail_rank)
    else:  # an Ibarrier of the command's own (requ's idle broadcast waits in one)
        comm.Ibarrier().Wait()
        comm.bcast(None, root=fail_rank)
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="beckmann")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=handler)
    return p


cli.build_parser = build_parser
sys.exit(cli.main([]))
'''


@pytest.mark.parametrize(("rank", "wait"), [(1, "barrier"), (0, "bcast"), (1, "ibarrier"),
                                            (0, "ibarrier")])
def test_error_on_one_rank_only_ends_the_job(tmp_path, rank, wait):
    # beckmann.cli.main's error path when a single rank raises while the other waits in a
    # collective: the failing rank's 10 s watchdog aborts the job with its one line
    import sys
    import time

    script = tmp_path / "alone.py"
    script.write_text(ALONE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    proc = subprocess.run([MPIRUN, "-n", "2", sys.executable, str(script), str(rank), wait],
                          capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("beckmann:")]
    assert lines == [f"beckmann: error: bad on rank {rank} only (rank {rank})"], proc.stderr
    assert elapsed < 30, elapsed


@pytest.mark.parametrize("formulation", ["primal", "mixed"])
def test_krylov_failure_is_one_line_with_the_hint(tmp_path, formulation):
    # both formulations report a Krylov failure the same way (poisson.krylov_solve)
    proc = run("solve", "--set", "mesh.n=64", "--set", f"solver.formulation={formulation}",
               "--set", "solver.petsc_options.ksp_max_it=2", "--out", str(tmp_path / "r"),
               timeout=90)  # fmt: skip
    name = "the mixed gamg solve" if formulation == "mixed" else "the gmg solve"
    one_clean_line(proc, rf"{name} failed after 2 iterations \(PETSc reason -3: DIVERGED_MAX_IT\); "
                         r"try solver\.method = 'mumps'")  # fmt: skip
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("ranks", [1, 2])
def test_solver_options_that_would_pass_silently(tmp_path, ranks):
    # rtol >= 1 accepted the zero initial guess (phi = 0, exit 0); a table value became a string
    for sets, match in (
        (["solver.rtol=1e300"], r"solver\.rtol must be in \(0, 1\) or .auto., got 1e\+300"),
        (["solver.rtol=1", "solver.formulation=mixed"], r"solver\.rtol must be in \(0, 1\)"),
        (["solver.petsc_options={a={b=1}}"], r"solver\.petsc_options: a = \{'b': 1\} is not a "
                                             r"PETSc option value"),
    ):  # fmt: skip
        out = tmp_path / "r"
        args = [a for s in sets for a in ("--set", s)]
        one_clean_line(run("solve", "--set", "mesh.n=40", *args, "--out", str(out), ranks=ranks),
                       match)  # fmt: skip
        assert not out.exists()


@pytest.mark.parametrize("ranks", [1, 2])
def test_arguments_that_are_not_utf8(tmp_path, ranks):
    # dolfinx hands sys.argv to its C++ logger at import: undecodable bytes made every command
    # (even --version) end in a TypeError there, and a path with them failed at the first write
    bad = os.fsdecode(b"\xff")
    proc = run("--version", bad, ranks=ranks)
    assert proc.returncode == 0 and "beckmann" in proc.stdout, proc.stderr
    one_clean_line(run("solve", "--set", f"mesh.n={bad}", "--out", str(tmp_path / "a"),
                       ranks=ranks), r"the argument b'mesh\.n=\\xff' is not valid UTF-8")
    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/o\xff")
    one_clean_line(run("solve", "--set", "mesh.n=4", "--out", out, ranks=ranks),
                   r"the argument b'.*/o\\xff' is not valid UTF-8")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("ranks", [1, 2])
def test_histogram_bins_are_sized_before_the_transport(run_dir, tmp_path, ranks):
    one_clean_line(run("sample", str(run_dir), "--n", "10", "--bins", "100000",
                       "--out", str(tmp_path / "s.npy"), ranks=ranks),
                   r"--bins 100000 \(100000\^2 = 1e\+10 bins\) needs about .* GiB.*lower --bins")
    assert not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize("ranks", [1, 2])
def test_reduced_max_beyond_the_training_set_is_the_training_set(tmp_path, ranks):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('[mesh]\nn = 6\n[target]\nkind = "expression"\n'
                   'expr = "0.2 + exp(-((x - theta)**2 + (y - 0.5)**2) / 0.02)"\n'
                   '[sweep]\nmethod = "reduced"\nreduced_max = 100000000\n'
                   "[sweep.parameters]\ntheta = { linspace = [0.3, 0.7, 3] }\n")
    proc = run("sweep", str(cfg), "--out", str(tmp_path / "st"), "-q", ranks=ranks)
    assert proc.returncode == 0, proc.stderr
    reduced = strict_json((tmp_path / "st" / "summary.json").read_text())["reduced"]
    assert reduced["max"] == 100000000 and 1 <= reduced["size"] <= 3


@pytest.mark.parametrize("ranks", [1, 2])
def test_empty_output_times_is_a_config_error(tmp_path, ranks):
    one_clean_line(run("solve", "--set", "mesh.n=4", "--set", "output.times=[]",
                       "--out", str(tmp_path / "r"), ranks=ranks),
                   r"output\.times must list at least one time")
    assert not (tmp_path / "r").exists()
    proc = run("solve", "--set", "mesh.n=4", "--set", "output.times=[true]",
               "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    one_clean_line(proc, r"output\.times must be numbers in \[0, 1\], got True")


def test_fit_depth_is_bounded(run_dir, tmp_path):
    one_clean_line(run("fit", str(run_dir), "--steps", "2", "--width", "4", "--depth", "1000",
                       "--out", str(tmp_path / "m")), r"--depth must be <= 64, got 1000")


def test_holder_windows_and_regions_that_hold_nothing(run_dir):
    for args, match in (
        (["--margin", "10", "--delta-min", "0.05", "--delta-max", "0.2"],
         r"no node of the field is left to measure: margin 10"),
        ([], r"empty scale window: .*the mesh is too coarse"),  # n = 6: 3h > diagonal / 4
        (["--delta-max", "0.01"], r"empty scale window: delta_min=.* \(the mesh's: 3 h\) >= "
         r"delta_max=0\.01; pass a larger delta_max or a delta_min"),
        (["--delta-min", "0"], r"delta_min must be a finite positive number, got 0\.0"),
        (["--delta-min", "nan"], r"delta_min must be a finite positive number, got nan"),
        (["--delta-max", "-1"], r"delta_max must be a finite positive number"),
        (["--delta-min", "0.3", "--delta-max", "0.2"], r"need delta_min < delta_max"),
        (["--center", "nan,0.5", "--radius", "0.2"], r"--center must be finite numbers"),
    ):
        one_clean_line(run("holder", str(run_dir), *args), match)


def test_study_takes_the_given_window_on_a_coarse_mesh(tmp_path):
    # the mesh's own window is empty at n = 4 (3h > a quarter of the diagonal), but a given
    # window needs no mesh scale; --fields without a field is refused
    cfg = tmp_path / "study.toml"
    cfg.write_text(STUDY_TOML.replace("n = 16", "n = 4"))
    one_clean_line(run("study", str(cfg), "--levels", "2", "--fields", ",,",
                       "--out", str(tmp_path / "none")), r"--fields names no field")
    proc = run("study", str(cfg), "--levels", "2", "--fields", "potential",
               "--delta-min", "0.05", "--delta-max", "0.3", "--out", str(tmp_path / "st"),
               timeout=180)
    assert proc.returncode == 0, proc.stderr
    window = strict_json((tmp_path / "st" / "study.json").read_text())["window"]
    assert (window["delta_min"], window["delta_max"]) == (0.05, 0.3)


def test_damaged_run_files_are_named(run_dir, tmp_path):
    import shutil

    pts = tmp_path / "pts.npy"
    np.save(pts, np.array([[0.5, 0.5]]))
    bad_xdmf = tmp_path / "bad_xdmf"
    shutil.copytree(run_dir, bad_xdmf)
    (bad_xdmf / "solution.xdmf").write_text("<xml")
    one_clean_line(run("probe", str(bad_xdmf), "--points", str(pts)),
                   r"cannot read the mesh of '.*bad_xdmf/.*solution\.xdmf'")
    bad_json = tmp_path / "bad_json"
    shutil.copytree(run_dir, bad_json)
    (bad_json / "summary.json").write_bytes(b"\xb8\x00\xff{")
    for cmd in (["probe", str(bad_json), "--points", str(pts)], ["holder", str(bad_json)]):
        one_clean_line(run(*cmd), r"'.*bad_json/summary\.json' is not valid JSON: it is not UTF-8")


@pytest.mark.parametrize("ranks", [1, 2])
def test_stored_function_of_another_dimension_or_domain(run_dir, tmp_path, ranks):
    # run_dir is the 2D unit square: not a 3D target, nor one of a larger square
    base = ["--set", "target.kind=function", "--set", f"target.path={run_dir}"]
    one_clean_line(run("solve", "--set", "mesh.kind=unit_cube", "--set", "mesh.n=2", *base,
                       "--out", str(tmp_path / "a"), ranks=ranks),
                   r"target\.path '.*' holds a 2D run, the mesh is 3D")
    one_clean_line(run("solve", "--set", "mesh.kind=disk", "--set", "mesh.h=0.5", *base,
                       "--out", str(tmp_path / "b"), ranks=ranks),
                   r"the mesh's bounding box .* is not inside the stored run's "
                   r"\[0, 0\] - \[1, 1\]")


def test_sweep_parameters_and_probe_params(tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('[mesh]\nn = 4\n[target]\nkind = "expression"\nexpr = "1 + theta*x"\n'
                   "[sweep.parameters]\ntheta = { linspace = [0.3, 0.7, 3] }\n")
    one_clean_line(run("sweep", str(cfg), "--set", "sweep.parameters=5",
                       "--out", str(tmp_path / "no")),
                   r"\[sweep\.parameters\] must be a table of parameters, got 5")
    store = tmp_path / "st"
    assert run("sweep", str(cfg), "--out", str(store), "-q").returncode == 0
    pts = tmp_path / "pts.npy"
    np.save(pts, np.array([[0.5, 0.5]]))
    one_clean_line(run("probe", str(store), "--param", "theta=0.5", "--param", "theta=0.7",
                       "--points", str(pts)), r"--param theta is given twice")
    # the message shows the value as given, not rounded onto the grid point it misses
    one_clean_line(run("probe", str(store), "--param", "theta=0.30000000001",
                       "--points", str(pts)),
                   r"θ \(theta=0\.30000000001\) is not on the sweep grid")


def test_contradicting_or_idle_options(run_dir, tmp_path):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('[mesh]\nn = 4\n[target]\nkind = "expression"\nexpr = "1 + theta*x"\n'
                   "[sweep.parameters]\ntheta = { linspace = [0.3, 0.7, 3] }\n")
    one_clean_line(run("sweep", str(cfg), "--resume", "--overwrite", "--out", str(tmp_path / "st")),
                   r"--resume and --overwrite contradict each other")
    one_clean_line(run("sample", str(run_dir), "--n", "10", "--grid", "5",
                       "--out", str(tmp_path / "s.npy")),
                   r"--grid is the time grid of --path fisher-rao; the linear path has none")
    assert not (tmp_path / "st").exists() and not (tmp_path / "s.npy").exists()

"""Convergence of the Beckmann cost on an image target (issue 14, item 1), against a spectral solve.

The target is a photograph-like test image, generated (deterministic): soft-edged discs and
ellipses ("objects") over a shaded background, with a band-limited texture, stored as an 8-bit
greyscale PNG of ``--pixels`` x ``--pixels`` pixels. Its pixel lines do not meet the mesh nodes
(199 spacings for 200 pixels: no mesh n = 2^j puts a node on every pixel). beckmann reads it as
documented (row 0 at the top, the first and last pixels on the faces, bilinear between pixels),
adds ``--floor`` and normalises; the source is uniform.

Reference: the cosine (Neumann) series of the same continuous problem, exactly. The target
p1 = (I + floor) / m is the bilinear interpolant of the pixel values I_ij, and a hat function's
cosine moments are known in closed form, so with nodes x_i = i h (h = 1/(N − 1))

    ∫₀¹ hat_i(x) cos(kπx) dx = w_i h cos(kπx_i) sinc²(kh/2),  w_i = ½ at the ends, else 1,

(``sinc(u) = sin(πu)/(πu)``) and the coefficients c_kl = ∫∫ p1 cos(kπx) cos(lπy) are a DCT-I of
the pixels times sinc²(kh/2) sinc²(lh/2), for every k, l (the DCT-I is 2(N − 1)-periodic in k).
Then Δφ = p0 − p1 gives the cost

    ½ ∫ |∇φ|² = ½ Σ_(k,l)≠0  c_kl² / (n_k n_l π² (k² + l²)),  n_0 = 1, n_k = ½ (k > 0),

summed over k, l < ``--modes`` x (N − 1) (the tail falls like K⁻⁵; the script prints the change
from half as many modes). The mass m is exact too (the trapezoidal rule: c_00).

beckmann: :func:`beckmann.pipeline.solve`, P1 (``--degree``), GAMG-CG to rtol 1e-11, the
right-hand side at quadrature points (``solver.quadrature_degree``, default 2k + 2); with
``--nodal`` also the old right-hand side from the nodal interpolants of the densities (the same
operator, ∫ (I_h p1 − I_h p0) w dx), which converges unevenly.

    python scripts/image_convergence.py                        # n = 64, 128, 256
    python scripts/image_convergence.py --n 64 128 256 512 --nodal

Serial (the API call is collective, so ``mpirun -n 2`` works too; rank 0 prints).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.fft

FLOOR = 0.1


def test_image(pixels: int, seed: int = 14) -> np.ndarray:
    """The test image as 8-bit values ``[row, col]`` (row 0 at the top), deterministic."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, pixels)
    X, Y = np.meshgrid(t, t[::-1])  # [row, col]: row 0 is the top (y = 1)
    img = 0.35 + 0.25 * X * (1 - Y) + 0.1 * np.sin(2.5 * X + 1.3 * Y)  # shading
    edge = 1.5 / pixels  # soft edges about 1.5 pixels wide, like an in-focus photograph
    for _ in range(9):
        cx, cy = rng.uniform(0.15, 0.85, 2)
        a, b = rng.uniform(0.05, 0.18, 2)
        ang = rng.uniform(0, np.pi)
        u = ((X - cx) * np.cos(ang) + (Y - cy) * np.sin(ang)) / a
        v = (-(X - cx) * np.sin(ang) + (Y - cy) * np.cos(ang)) / b
        r = np.sqrt(u**2 + v**2)
        inside = 0.5 * (1 - np.tanh((r - 1) * min(a, b) / edge))
        img += rng.uniform(-0.3, 0.45) * inside
    img += 0.6 * gaussian_filter(rng.standard_normal(img.shape), 1.2)  # texture, grain
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(255 * img).astype(np.uint8)


def write_png(img: np.ndarray, path: Path) -> Path:
    from PIL import Image

    Image.fromarray(img, mode="L").save(path)
    return path


def cosine_coefficients(values: np.ndarray, modes: int) -> np.ndarray:
    """c_kl = ∫∫ u cos(kπx) cos(lπy) for k, l < ``modes``, u bilinear between node values.

    ``values`` is indexed ``[i_x, i_y]`` on the unit square's node grid (first and last nodes on
    the faces). Exact (see the module docstring).
    """
    nx, ny = values.shape
    Y = scipy.fft.dctn(values, type=1) / 4.0  # Σ_ij w_i w_j u_ij cos(kπ x_i) cos(lπ y_j)
    out = Y
    for axis, n in ((0, nx), (1, ny)):
        h = 1.0 / (n - 1)
        k = np.arange(modes)
        r = k % (2 * (n - 1))
        r = np.where(r > n - 1, 2 * (n - 1) - r, r)  # DCT-I: even and 2(N − 1)-periodic in k
        s = h * np.sinc(k * h / 2.0) ** 2
        out = np.take(out, r, axis=axis) * (s[:, None] if axis == 0 else s[None, :])
    return out


def spectral_cost(values: np.ndarray, floor: float, modes: int) -> tuple[float, float]:
    """Exact Beckmann cost of p0 = 1 → p1 = (u + floor)/m on the unit square; and m."""
    c = cosine_coefficients(values, modes)
    mass = c[0, 0] + floor
    c = c / mass
    k = np.arange(modes)
    norm = np.where(k == 0, 1.0, 0.5)
    lam = np.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2)
    lam[0, 0] = np.inf  # the mean: no contribution
    return float(0.5 * np.sum(c**2 / (norm[:, None] * norm[None, :] * lam))), float(mass)


def pixels_as_grid(img: np.ndarray) -> np.ndarray:
    """8-bit ``[row, col]`` (row 0 at the top) -> values in [0, 1] indexed ``[i_x, i_y]``."""
    return np.ascontiguousarray(img[::-1, :].T.astype(np.float64) / 255.0)


def beckmann_costs(png: Path, n: int, degree: int, floor: float, qdeg: int, nodal: bool) -> dict:
    """The cost of ``beckmann`` at mesh ``n`` (and of the nodal right-hand side)."""
    from beckmann import config
    from beckmann._dolfinx import MPI, fem, ufl
    from beckmann.pipeline import solve
    from beckmann.poisson import NeumannPoisson

    cfg = config.resolve(sets=[
        f"mesh.n={n}", f"solver.degree={degree}", "solver.rtol=1e-11",
        f"solver.quadrature_degree={qdeg}", 'target.kind="image"', f'target.path="{png}"',
        f"target.floor={floor}",
    ])  # fmt: skip
    t0 = time.perf_counter()
    sol = solve(cfg, MPI.COMM_WORLD)
    out = {"cost": sol.cost(), "seconds": time.perf_counter() - t0,
           "qdeg": sol.info["quadrature_degree"], "ndofs": sol.info["ndofs"]}
    if nodal:
        P = NeumannPoisson(sol.V, rtol=1e-11)
        f = fem.Function(sol.V)
        f.x.array[:] = sol.p1.x.array - sol.p0.x.array
        phi = P.solve(f)
        energy = fem.form(0.5 * ufl.inner(ufl.grad(phi), ufl.grad(phi)) * ufl.dx)
        local = fem.assemble_scalar(energy)
        out["nodal"] = float(sol.comm.allreduce(local, op=MPI.SUM))
        P.destroy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[64, 128, 256], help="cells per side")
    ap.add_argument("--pixels", type=int, default=200, help="image size (pixels per side)")
    ap.add_argument("--floor", type=float, default=FLOOR)
    ap.add_argument("--degree", type=int, default=1)
    ap.add_argument("--quadrature-degree", type=int, default=-1)
    ap.add_argument("--modes", type=int, default=16, help="series modes per pixel spacing")
    ap.add_argument("--nodal", action="store_true", help="also the nodal-interpolant RHS")
    args = ap.parse_args()
    from beckmann._dolfinx import MPI

    root = MPI.COMM_WORLD.rank == 0
    img = test_image(args.pixels)
    values = pixels_as_grid(img)
    K = args.modes * (args.pixels - 1)
    t0 = time.perf_counter()
    ref, mass = spectral_cost(values, args.floor, K)
    half, _ = spectral_cost(values, args.floor, K // 2)
    if root:
        print(f"image {args.pixels} x {args.pixels} px, floor {args.floor}, raw mass {mass:.6f}; "
              f"spectral cost {ref:.10e} ({K} x {K} modes, {time.perf_counter() - t0:.1f} s; "
              f"relative change from {K // 2} modes {abs(ref - half) / ref:.1e})", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="beckmann-image-")) if root else None
    tmp = MPI.COMM_WORLD.bcast(tmp, root=0)
    png = write_png(img, tmp / "image.png") if root else tmp / "image.png"
    MPI.COMM_WORLD.barrier()
    errors = []
    for n in args.n:
        r = beckmann_costs(png, n, args.degree, args.floor, args.quadrature_degree, args.nodal)
        rel = (r["cost"] - ref) / ref
        errors.append(abs(rel))
        nodal = f", nodal RHS {(r['nodal'] - ref) / ref:+.3e}" if "nodal" in r else ""
        if root:
            print(f"n = {n:5d} P{args.degree} ({r['ndofs']} dofs, quadrature degree {r['qdeg']}, "
                  f"{r['seconds']:.1f} s): cost {r['cost']:.10e}, (cost - ref)/ref {rel:+.3e}"
                  f"{nodal}", flush=True)
    if root and len(errors) > 1:
        ratios = [a / b for a, b in zip(errors[:-1], errors[1:], strict=True)]
        print("error ratios per refinement: " + ", ".join(f"{q:.2f}" for q in ratios)
              + ("  (monotone)" if all(q > 1 for q in ratios) else "  (NOT monotone)"))


if __name__ == "__main__":
    main()

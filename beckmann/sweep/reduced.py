r"""The certified reduced basis of a sweep: the model, its online fields and bounds.

The offline phase that builds it (greedy EIM, basis solves) is :mod:`beckmann.sweep.offline`.

The target family is interpolated, :math:`f(\theta) \approx \sum_m c_m(\theta)\,\xi_m` with
``c = B⁻¹ f(θ)(x_1..x_M)`` from ``M`` nodal values (:mod:`beckmann.sweep.eim`); each ``ξ_m`` is
a combination of target snapshots, so it is a function defined everywhere, and its right-hand
side ``b_m = ∫ ξ_m w dx`` and mass ``Z_m`` use the quadrature of the engine's right-hand sides
(:class:`beckmann.density.discrete.QuadratureRHS`, as a full solve). Normalising by the
interpolant's mass ``Z_M = Σ c_m Z_m`` (linear in ``c``) gives ``d = c / Z_M`` and

.. math:: \varphi_M(\theta) = \sum_m d_m \psi_m,\qquad
          \psi_m = A^+ (b_m - Z_m b_0),

one Neumann solve per basis function and none per θ. The certified bound on
``‖∇(φ_h(θ) − φ_M(θ))‖_{L²}`` (docs/reduced.md, derived there) is

.. math:: \eta(\theta) = \sqrt{\beta(b_r) / \lambda_{1,h}} + \sum_m |d_m|\,\eta_{alg,m},\qquad
          b_r = b(\theta)/Z(\theta) - \sum_m d_m b_m,

with ``β(b) ≥ bᵀM⁻¹b``, :math:`\lambda_{1,h}` from :mod:`beckmann.sweep.eigen` and
:math:`\eta_{alg,m}` the bound on the algebraic error of the ``m``-th solve; the cost bound is
``|J_h − J_M| ≤ η (‖∇φ_M‖ + η / 2)``. With the default truth (``[sweep] reduced_rhs =
"interpolant"``, ``b(θ) = M I_h f(θ)``) ``β(b_r) = rᵀMr`` for the nodal residual ``r``, bounded
for the grid by ``ν rᵀ diag(M) r`` (``O(N M)`` per θ, no solve, no quadrature); with
``"quadrature"`` it needs the target at every quadrature point and a mass CG
(:meth:`MassNorm.dual`). The fields alone need ``M`` point values and ``Ψ d``.

:class:`ReducedModel` holds the basis over the owned dofs of one space (the engine's while
building, the store's when reloaded on any number of ranks).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.linalg import solve_triangular
from scipy.linalg.blas import dgemm

from beckmann import density
from beckmann._dolfinx import MPI, PETSc, dolfinx, fem, ufl
from beckmann._mpi import agree, allreduce_array, global_bbox, on_root
from beckmann.density.discrete import DensityPoints, DiscreteDensity, QuadratureRHS
from beckmann.density.parametric import bind_block
from beckmann.store.writes import write_on_root
from beckmann.sweep.mass import MassNorm, agree_mask, mass_diagonal_constant
from beckmann.sweep.store import REDUCED_FILE, SweepStore, gather_rows
from beckmann.sweep.training import training_set

__all__ = [
    "REDUCED_FILE",
    "RHS_KINDS",
    "MassNorm",
    "ReducedModel",
    "is_reduced",
    "mass_diagonal_constant",
    "training_set",
]

FloatArray = npt.NDArray[np.float64]

_ARRAYS = ("points", "B", "Z", "G", "eta_alg")

#: θ per evaluation of the nodal target in :meth:`ReducedModel.certify_many`: its temporaries
#: (``_EVAL_ROWS × N`` values each) stay in cache.
_EVAL_ROWS = 2

def _relative(eta: FloatArray, norm: FloatArray) -> FloatArray:
    """``η / (‖∇φ_M‖ − η)``, the bound on ``‖∇e‖ / ‖∇φ_h‖``; ``inf`` where ``η ≥ ‖∇φ_M‖``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(norm > eta, eta / (norm - eta), np.inf), dtype=np.float64)


def online_threads() -> int:
    """Threads of a serial certificate (:meth:`ReducedModel.certify_many`).

    ``BECKMANN_THREADS``, else ``OMP_NUM_THREADS`` (one thread per process where the user asks
    for it), else the usable cores; at most the usable cores. An MPI run uses one per rank.
    """
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    for name in ("BECKMANN_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return max(1, min(int(value), cores))
            except ValueError:
                return 1
    return cores


#: ``[sweep] reduced_rhs``: the truth's right-hand side (docs/reduced.md).
RHS_KINDS = ("interpolant", "quadrature")


def is_reduced(folder: str | Path, comm: MPI.Comm) -> bool:
    """``True`` when the store holds a reduced basis (same on every rank). Collective."""
    return bool(on_root(comm, lambda: (Path(folder) / REDUCED_FILE).is_file()))


class ReducedModel:
    """A reduced basis on the owned dofs of ``V``; online fields and certified bounds.

    Args:
        V: The potential's space.
        arrays: ``psi`` (owned rows ``(n, M)``), ``bxi`` (right-hand sides ``b_m``; only the
            quadrature truth reads them) and the
            small arrays of :class:`~beckmann.sweep.eim.Greedy` (``points``, ``B``, ``Z``,
            ``G``, ``eta_alg``).
        lam1: ``λ_{1,h}`` of ``V``'s mesh.
        cfg: The resolved config (``[target]`` and ``solver.quadrature_degree``).
        names: Parameter names, in grid order.
        rhs: The truth's right-hand side (``[sweep] reduced_rhs``): ``"interpolant"``,
            ``b(θ) = M I_h f(θ)`` (then ``arrays`` holds the nodal basis ``xi`` too, and the
            certificate is ``O(N)`` per θ), or ``"quadrature"``, ``b(θ)_i = Q(f(θ) w_i)`` as
            ``beckmann solve`` (``O(N_q)`` and a mass-matrix CG per θ).

    Collective construction.
    """

    def __init__(
        self,
        V: fem.FunctionSpace,
        arrays: dict[str, FloatArray],
        lam1: float,
        cfg: dict[str, Any],
        names: list[str],
        *,
        rhs: str = "quadrature",
        mass: MassNorm | None = None,
        points: DensityPoints | None = None,
    ) -> None:
        if rhs not in RHS_KINDS:
            raise ValueError(f"reduced_rhs must be one of {RHS_KINDS}, got {rhs!r}")
        self.rhs = rhs
        self.V = V
        self.comm = V.mesh.comm
        self.nloc = V.dofmap.index_map.size_local
        self.bxi = np.ascontiguousarray(arrays.get("bxi", np.zeros((self.nloc, 0))))
        self.psi = np.ascontiguousarray(arrays["psi"])
        self.xi = np.ascontiguousarray(arrays.get("xi", np.zeros((self.nloc, 0))))
        self.points: FloatArray = np.asarray(arrays["points"], dtype=np.float64)
        self.B: FloatArray = np.asarray(arrays["B"], dtype=np.float64)
        self.Z: FloatArray = np.asarray(arrays["Z"], dtype=np.float64)
        self.G: FloatArray = np.asarray(arrays["G"], dtype=np.float64)
        self.eta_alg: FloatArray = np.asarray(arrays["eta_alg"], dtype=np.float64)
        self.lam1 = float(lam1)
        self.names = list(names)
        #: whether :meth:`destroy` frees the mass matrix (the model built it, or took it over)
        self.owns_mass = mass is None
        self.mass = mass if mass is not None else MassNorm(V)
        self._xT = np.ascontiguousarray(V.tabulate_dof_coordinates()[: self.nloc].T)
        self.m = self.mass.mult(np.ones(self.nloc))  # M 1: nodal masses are mᵀ f
        self.dp = points if points is not None else DensityPoints(  # the engine's rule
            V, cfg["solver"]["quadrature_degree"], (cfg["source"], cfg["target"])
        )
        self.qrhs = QuadratureRHS(self.dp)
        self._b = dolfinx.fem.petsc.create_vector(V)
        self._zero = DiscreteDensity(fem.Function(V), fem.Function(self.dp.Q), 1.0, np.nan)
        self._f = DiscreteDensity(self._zero.p, fem.Function(self.dp.Q), 1.0, np.nan)
        self._qpts: FloatArray | None = None
        self._P: PETSc.Mat | None = None
        self._Pb: PETSc.Vec | None = None
        gdim = V.mesh.geometry.dim
        bbox = global_bbox(V.mesh.geometry.x[:, :gdim], self.comm)
        self.ev = density.make_evaluator(cfg["target"], gdim=gdim, bbox=bbox)
        self._tcfg = cfg["target"]
        self._nodal_block = self._block_evaluator(self._xT)
        self._magic: tuple[FloatArray, Any] | None = None  # (points, their block evaluator)
        self._tensor: tuple[FloatArray, Any] | None = None  # (xi, its TensorCertificate)

    def source_rhs(self, source: DiscreteDensity) -> FloatArray:
        """``∫ q0 w dx`` over the owned dofs, by the engine's quadrature right-hand side."""
        return self.qrhs.assemble(self._zero, source, self._b).array[: self.nloc].copy()

    def _block_evaluator(self, pts: FloatArray) -> Callable[[FloatArray], FloatArray] | None:
        """Raw target at ``pts`` ``(3, n)`` for many θ at once, or ``None`` (not an expression).

        The rows of ``T`` ``(K, len(names))`` give θ; :func:`~beckmann.density.parametric.
        bind_block`, the values of :meth:`target_at` (same operations, the floor added last).
        """
        sec = self._tcfg
        if sec.get("kind") != "expression":
            return None
        fixed = {k: v for k, v in sec.get("params", {}).items() if k not in self.names}
        f = bind_block(density.Expression(sec["expr"]), np.ascontiguousarray(pts), self.names,
                       fixed)
        floor = float(sec.get("floor", 0.0))
        if f is None or floor == 0.0:
            return f

        def with_floor(T: FloatArray) -> FloatArray:
            v = f(T)
            v += floor
            return v

        return with_floor

    def _tensor_certificate(self) -> Any:
        """The :class:`~beckmann.sweep.tensor.TensorCertificate` of the basis, or ``None``.

        Only for the interpolant truth of an expression target that separates in ``x, y``
        (:func:`~beckmann.density.separable.separate`) on owned dofs that lie on a grid;
        built once per basis. Collective.
        """
        if self._tensor is not None and self._tensor[0] is self.xi:
            return self._tensor[1]
        cert = None
        if self.rhs == "interpolant" and self.size:
            from beckmann.sweep.tensor import TensorCertificate, separated_target

            st = separated_target(self._tcfg, self.names, self._xT.T, self.comm)
            if st is not None:
                cert = TensorCertificate(*st, self.xi, self.mass.D, self.m, self.mass.nu,
                                         self.comm, float(self._tcfg.get("floor", 0.0)))
        self._tensor = (self.xi, cert)
        return cert

    def _magic_values(self, values: FloatArray) -> FloatArray:
        """``(K, M)`` raw target at the magic points for the θ rows of ``values``."""
        if self._magic is None or self._magic[0] is not self.points:
            self._magic = (self.points, self._block_evaluator(self.points.T))
        f = self._magic[1]
        if f is not None:
            return f(values)
        thetas = [dict(zip(self.names, map(float, t), strict=True)) for t in values]
        return np.array([self.target_at(self.points.T, t) for t in thetas]).reshape(
            len(thetas), self.size)

    @property
    def threads(self) -> int:
        """Threads of the grid certificate (:func:`online_threads`, or 1).

        Several only serially, for the interpolant truth of an expression target (its block
        evaluation releases the GIL).
        """
        threaded = (self.comm.size == 1 and self.rhs == "interpolant"
                    and self._nodal_block is not None)
        return online_threads() if threaded else 1

    @property
    def size(self) -> int:
        """The basis size ``M``."""
        return int(self.psi.shape[1])

    def target_at(self, pts: FloatArray, theta: dict[str, float]) -> FloatArray:
        """Raw target values at points ``(3, n)``. Not collective."""
        with np.errstate(all="ignore"):
            v = self.ev(np.ascontiguousarray(pts), theta)
        return np.asarray(np.broadcast_to(v, (pts.shape[1],)), dtype=np.float64)

    def nodal_target(self, theta: dict[str, float]) -> FloatArray:
        """Raw target values at the owned dofs (``I_h f(θ)``). Not collective."""
        return self.target_at(self._xT, theta)

    def raw_rhs(self, theta: dict[str, float]) -> FloatArray:
        """Owned ``∫ f(θ) w dx`` of the raw target, with the solve's quadrature; collective."""
        if self._qpts is None:  # computed once: thousands of θ reuse them
            self._qpts = self.dp.qpoints
            # b = P f_q with P_iq = ω_q |J| w_i(x_q): the quadrature right-hand side as one
            # sparse product (the same sums as QuadratureRHS, 4x cheaper per θ); ghosts
            # are summed by the matrix assembly
            trial, test = ufl.TrialFunction(self.dp.Q), ufl.TestFunction(self.V)
            self._P = dolfinx.fem.petsc.assemble_matrix(fem.form(trial * test * self.dp.dx))
            self._P.assemble()
            self._Pb = self._P.createVecLeft()
        self._f.q.x.array[:] = self.target_at(self._qpts, theta)
        self._P.mult(self._f.q.x.petsc_vec, self._Pb)
        return self._Pb.array[: self.nloc].copy()

    def coefficients(self, theta: dict[str, float]) -> FloatArray:
        """``d(θ) = c / Z_M``, from the target at the magic points only. Not collective."""
        fm = self.target_at(self.points.T, theta)
        c = solve_triangular(self.B, fm, lower=True, unit_diagonal=True)
        return np.asarray(c / float(self.Z @ c), dtype=np.float64)

    def potential(self, d: FloatArray) -> FloatArray:
        """Owned values of ``φ_M = Ψ d``."""
        return np.asarray(self.psi @ d, dtype=np.float64)

    def certify(self, theta: dict[str, float], d: FloatArray) -> dict[str, float]:
        """The certified bounds at ``θ`` for coefficients ``d``; collective (no solve).

        Returns ``error_bound`` (on ``‖∇(φ_h − φ_M)‖``), ``phi_norm`` (``‖∇φ_M‖``), ``cost``
        (``½‖∇φ_M‖²``), ``cost_bound`` (on ``|J_h − J_M|``), ``relative_bound`` (on
        ``‖∇e‖ / ‖∇φ_h‖``; ``inf`` when ``η ≥ ‖∇φ_M‖``) and ``residual`` (``√(b_rᵀM⁻¹b_r)``
        or its bound ``√β(b_r)``: the residual's discrete dual norm ``‖Π_h r‖_{L²}``).
        """
        vals = np.array([[theta[k] for k in self.names]], dtype=np.float64)
        out = self.certify_many(vals, np.asarray(d, dtype=np.float64)[None, :])
        return {k: float(v[0]) for k, v in out.items() if k != "coefficients"}

    def certify_many(
        self,
        values: FloatArray,
        D: FloatArray | None = None,
        *,
        block: int = 128,
        exact_above: float = 0.0,
        update: Callable[[int], Any] | None = None,
    ) -> dict[str, FloatArray]:
        """:meth:`certify` at many θ (rows of ``values``, in :attr:`names` order); collective.

        ``D`` gives the coefficients (default: :meth:`coefficients`), returned as
        ``"coefficients"``. With ``rhs = "interpolant"`` the residuals of ``block`` θ at once
        are ``Rᵀ = Fᵀ Z⁻¹ − D Ξᵀ`` (nodal targets ``F``: one GEMM) and ``b_rᵀM⁻¹b_r = rᵀMr``
        (no solve, no quadrature): first bounded by ``ν rᵀ diag(M) r``
        (:func:`mass_diagonal_constant`, no sparse product), then, for the θ whose relative
        bound is still above ``exact_above``, computed exactly (one sparse-dense product of
        those columns). ``update(k)`` is called after each block of ``k`` θ.
        """
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        K, Msz = values.shape[0], self.size
        if D is None:  # the magic-point values of all θ at once, then one triangular solve
            fm = self._magic_values(values)
            C = solve_triangular(self.B, fm.T, lower=True, unit_diagonal=True).T if Msz else fm
            D = np.asarray(C / (C @ self.Z)[:, None], dtype=np.float64)
        norm = np.sqrt(np.maximum(np.einsum("km,mn,kn->k", D, self.G, D, optimize=True), 0.0))
        alg = np.abs(D) @ self.eta_alg
        rr = np.zeros(K)
        if self.rhs == "interpolant":
            rest = self._certify_separated(values, D, norm, alg, rr, exact_above, update)
            if rest.size:
                sub = np.zeros(rest.size)
                self._certify_nodal(values[rest], D[rest], norm[rest], alg[rest], sub, block,
                                    exact_above, update)
                rr[rest] = sub
        else:
            thetas = [self._theta(t) for t in values]
            for s in range(0, K, block):
                blk = range(s, min(s + block, K))
                for i in blk:
                    b = self.raw_rhs(thetas[i])
                    Zf = float(self.comm.allreduce(float(b.sum()), MPI.SUM))
                    rr[i] = self.mass.dual(b / Zf - self.bxi @ D[i])
                if update is not None:
                    update(len(blk))
        rr = np.maximum(rr, 0.0)
        eta = np.sqrt(rr / self.lam1) + alg
        rel = _relative(eta, norm)
        return {
            "error_bound": eta,
            "phi_norm": norm,
            "cost": 0.5 * norm**2,
            "cost_bound": eta * (norm + 0.5 * eta),
            "relative_bound": rel,
            "residual": np.sqrt(rr),
            "coefficients": D,
        }

    def _certify_separated(
        self,
        values: FloatArray,
        D: FloatArray,
        norm: FloatArray,
        alg: FloatArray,
        rr: FloatArray,
        exact_above: float,
        update: Callable[[int], Any] | None,
    ) -> npt.NDArray[np.intp]:
        """``rr[k] ≥ rᵀMr`` from the separated form (interpolant truth); the θ left over.

        With a separated target on a grid of nodes (:meth:`_tensor_certificate`) and
        ``exact_above > 0``, the diagonal bound of every θ, with no nodal target; returns the
        indices of the θ it leaves above ``exact_above`` (every θ without such a certificate),
        for :meth:`_certify_nodal`. Collective.
        """
        tc = self._tensor_certificate() if exact_above > 0.0 else None
        if tc is None:
            return np.arange(values.shape[0])
        rr[:] = tc.residual_bounds(values, D)
        rel = _relative(np.sqrt(rr / self.lam1) + alg, norm)
        rest = np.flatnonzero(agree_mask(~(rel <= exact_above), self.comm))
        if update is not None and rest.size < len(rr):
            update(len(rr) - rest.size)
        return rest

    def _certify_nodal(
        self,
        values: FloatArray,
        D: FloatArray,
        norm: FloatArray,
        alg: FloatArray,
        rr: FloatArray,
        block: int,
        exact_above: float,
        update: Callable[[int], Any] | None,
    ) -> None:
        """``rr[k] ≥ rᵀMr`` from the nodal targets, blocks of ``block`` θ; collective.

        Serially the blocks run on :func:`online_threads` threads (NumPy's ufuncs and BLAS
        release the GIL; each thread has its own buffer); the exact products of the θ the
        diagonal bound leaves above ``exact_above`` follow on the calling thread.
        """
        K, Msz = values.shape[0], self.size
        serial = self.comm.size == 1
        nthreads = self.threads
        bufs = [np.empty((min(block, K), self.nloc)) for _ in range(nthreads)]

        def sum_(a: FloatArray) -> FloatArray:
            return a if serial else allreduce_array(a, MPI.SUM, self.comm)

        def work(s: int, F: FloatArray) -> tuple[int, FloatArray, FloatArray | None]:
            # the nodal targets as rows, a few θ per evaluation (cache-sized temporaries),
            # then in place by one BLAS GEMM: Z r = f − Z Ξ d for the block, Fortran views
            # of the C-order arrays
            stop = min(s + block, K)
            nb = stop - s
            Fb = F[:nb]
            if self._nodal_block is not None:
                for j in range(s, stop, _EVAL_ROWS):
                    Fb[j - s : j - s + _EVAL_ROWS] = self._nodal_block(
                        values[j : min(j + _EVAL_ROWS, stop)])
            else:
                for j in range(s, stop):
                    Fb[j - s] = self.nodal_target(self._theta(values[j]))
            Zf = sum_(Fb @ self.m)
            RT = dgemm(-1.0, self.xi.T, (Zf[:, None] * D[s:stop]).T, beta=1.0, c=Fb.T,
                       trans_a=1, overwrite_c=1).T if self.nloc and Msz else Fb
            rk = self.mass.nu * sum_(np.einsum("ki,ki,i->k", RT, RT, self.mass.D)) / Zf**2
            rel = _relative(np.sqrt(rk / self.lam1) + alg[s:stop], norm[s:stop])
            above = rel > exact_above
            sel = np.flatnonzero(above if serial else agree_mask(above, self.comm))
            # the θ for the exact product: their residuals Z r / Z (the buffer is reused)
            R = np.ascontiguousarray(RT[sel].T) / Zf[sel] if sel.size else None
            rr[s:stop] = rk
            return s, sel, R

        def exact(s: int, sel: FloatArray, R: FloatArray | None) -> None:
            if R is not None:
                rr[s + sel] = sum_(np.einsum("ik,ik->k", R, self.mass.mult_block(R)))

        starts = list(range(0, K, block))
        if nthreads == 1:
            for s in starts:
                exact(*work(s, bufs[0]))
                if update is not None:
                    update(min(s + block, K) - s)
            return
        from concurrent.futures import ThreadPoolExecutor
        from queue import SimpleQueue

        from threadpoolctl import threadpool_limits

        free: SimpleQueue[FloatArray] = SimpleQueue()
        for buf in bufs:
            free.put(buf)

        def job(s: int) -> tuple[int, FloatArray, FloatArray | None]:
            buf = free.get()
            try:
                return work(s, buf)
            finally:
                free.put(buf)

        # one BLAS thread per worker: each worker's GEMM on several BLAS threads would
        # oversubscribe the cores (online 10.3-11.6 s instead of 6.9 s on 2 cores, n = 256)
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(nthreads) as pool:
            for s, sel, R in pool.map(job, starts):
                exact(s, sel, R)
                if update is not None:
                    update(min(s + block, K) - s)

    def _theta(self, t: FloatArray) -> dict[str, float]:
        return dict(zip(self.names, map(float, t), strict=True))

    def destroy(self) -> None:
        """Free the PETSc objects made here."""
        self._b.destroy()
        for obj in (self._P, self._Pb):
            if obj is not None:
                obj.destroy()
        if self.owns_mass:
            self.mass.destroy()

    # -- store
    def save(self, folder: Path, extra: dict[str, FloatArray], attrs: dict[str, Any]) -> None:
        """Write ``reduced.h5`` (basis rows gathered in rank order: the layout's); collective."""
        import h5py

        # the interpolant truth never reads b_m = M ξ_m: not stored (a third of the file)
        keys = ("psi", "xi") if self.rhs == "interpolant" else ("bxi", "psi", "xi")
        g = {k: gather_rows(getattr(self, k), self.comm) for k in keys}
        part = folder / (REDUCED_FILE + ".part")

        def write() -> None:
            with h5py.File(part, "w") as h5:
                for k, v in g.items():
                    h5.create_dataset(k, data=v)
                for k in _ARRAYS:
                    h5.create_dataset(k, data=getattr(self, k))
                for k, v in extra.items():
                    h5.create_dataset(k, data=v)
                h5.attrs["lambda1"] = self.lam1
                h5.attrs["rhs"] = self.rhs
                for k, v in attrs.items():
                    h5.attrs[k] = v
            part.replace(folder / REDUCED_FILE)

        write_on_root(self.comm, REDUCED_FILE, write)

    @classmethod
    def load(cls, store: SweepStore) -> tuple[ReducedModel, dict[str, Any]]:
        """The model on ``store.space()`` (any number of ranks) and the stored grid results.

        Raises:
            RuntimeError: The file cannot be read, or the layout does not match the mesh.
        """
        import h5py

        V = store.space()
        comm = store.comm
        idx = store.layout_rows()  # exact: the basis rows are in layout d0's dof order
        path = store.folder / REDUCED_FILE
        err = None
        arrays: dict[str, FloatArray] = {}
        results: dict[str, FloatArray] = {}
        attrs: dict[str, Any] = {}
        try:
            with h5py.File(path, "r") as h5:
                for k in ("bxi", "psi", "xi"):
                    if k in h5:
                        arrays[k] = np.asarray(h5[k][...])[idx]
                for k in _ARRAYS:
                    arrays[k] = np.asarray(h5[k][...])
                for k in h5:
                    if k not in arrays:
                        results[k] = np.asarray(h5[k][...])
                attrs = {k: h5.attrs[k] for k in h5.attrs}
        except (OSError, KeyError) as e:
            err = f"cannot read the reduced basis {str(path)!r}: {e}"
        agree(comm, err, RuntimeError)
        model = cls(V, arrays, float(attrs["lambda1"]), store.config, store.grid.names,
                    rhs=str(attrs.get("rhs", "quadrature")))
        return model, {"results": results, "attrs": attrs}

"""Kernel density estimates of sample points (``kind = "samples"``). Not collective.

**Bandwidth.** Scott's rule, ``H = M**(-2/(d+4)) cov``, is optimal for Gaussian-like data and
smooths sharp structure (thin curves, tight clusters) far too much. The default of ``samples``
densities is therefore **cross-validated likelihood** (:func:`cv_bandwidth`): on a log grid of
kernels around Scott's, ``H = c**2 H_shape`` with ``c = 2**(k/4)``, ``k = -24 .. 4``, and two
shapes (Scott's full covariance and the isotropic kernel of the same determinant), choose the
one (coarse to fine: every fourth factor, then the neighbours of the best) that maximises the
leave-one-out log-likelihood

    score(H) = (1/Q) Σ_{i in query} log( (1/(M−1)) Σ_{j≠i} N(s_i; s_j, H) )

over ``Q = min(M, 500, max(100, 10^7 / M))`` query points drawn with a fixed seed (each left
out of its own sum, evaluated against all other samples). The chosen kernel, its score and
Scott's score are kept in :attr:`GaussianKDE.description`. A maximum at the end of the grid is
flagged (``at_grid_edge``). A density on a mesh cannot hold a kernel much narrower than its
cells (the interpolant oscillates and turns negative), so the caller may set ``min_bandwidth``:
narrower kernels are left out and ``resolution_limited`` records that the data asked for one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.ndimage
import scipy.spatial

from beckmann.density.grid import bin_points, interpolate_grid
from beckmann.density.validate import check_bbox, real_number

__all__ = ["BANDWIDTH_RULES", "GaussianKDE", "cv_bandwidth", "load_samples"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Kernel density estimate: direct summation below this many (point, sample) pairs; the kernel is
# cut off at this many standard deviations by the grid and tree methods.
_KDE_DIRECT_PAIRS = 2.0e7
_KDE_TRUNCATE = 5.0
# Grid spacings tried (in kernel standard deviations) and the node budget of each.
_KDE_GRIDS = ((0.1, 2**20), (0.2, 2**22), (0.35, 2**23))

#: Bandwidth rules when ``bandwidth = 0``.
BANDWIDTH_RULES = ("cv", "scott")
#: Cross-validation: scale factors of the kernel (times Scott's), query points, seed.
_CV_FACTORS = 2.0 ** (np.arange(-24, 5) / 4.0)
_CV_QUERIES = 500
_CV_PAIRS = 10_000_000
_CV_NEAR = 2000
_CV_SEED = 0xC5


def _scott_covariance(data: FloatArray) -> FloatArray:
    m, d = data.shape
    if m <= d:
        raise ValueError(f"Scott's rule needs more than {d} samples, got {m}; set bandwidth > 0")
    return np.atleast_2d(np.cov(data.T)) * m ** (-2.0 / (d + 4))


def _loo_scores(data: FloatArray, L: FloatArray, q: IntArray) -> Callable[[float], float]:
    """Mean leave-one-out log-likelihood of the rows ``q`` as a function of the factor ``c``.

    The kernel is ``(c L)(c L)^T``. The squared whitened distances from each query point to all
    others are computed once, and the nearest ``_CV_NEAR`` of each row kept sorted: a narrow
    kernel sums only the distances within ``d_min² + 80 c²`` of the row's nearest one (the rest
    weigh less than ``e^-40`` of its largest term); a wide one sums all of them.
    """
    m, d = data.shape
    y = np.asarray(scipy.linalg.solve_triangular(L, data.T, lower=True)).T
    logdet = float(np.log(np.diag(L)).sum())
    yy = (y**2).sum(axis=1)
    d2 = np.maximum(yy[q, None] + yy[None, :] - 2.0 * y[q] @ y.T, 0.0).astype(np.float32)
    d2[np.arange(q.size), q] = np.inf  # leave each query point out of its own sum
    near_k = min(_CV_NEAR, m - 1)
    near = np.partition(d2, near_k - 1, axis=1)[:, :near_k]
    near.sort(axis=1)
    nearest = near[:, 0].astype(np.float64)
    norm0 = np.log(m - 1) + logdet + 0.5 * d * np.log(2.0 * np.pi)

    def score(c: float) -> float:
        cut = nearest + 80.0 * c * c
        rows = near if bool(np.all(cut < near[:, -1])) else d2
        if rows is near:
            k = max(int(np.searchsorted(r, t)) for r, t in zip(near, cut, strict=True))
            rows = near[:, : max(1, k)]
        e = np.exp((rows - nearest[:, None].astype(np.float32)) * np.float32(-0.5 / (c * c)))
        lse = -0.5 * nearest / (c * c) + np.log(e.sum(axis=1, dtype=np.float64))
        return float(lse.mean() - norm0 - d * np.log(c))

    return score


def cv_bandwidth(data: FloatArray, min_bandwidth: float = 0.0) -> dict[str, object]:
    """The kernel covariance of largest leave-one-out likelihood (see the module docstring).

    Kernels whose narrowest axis (standard deviation) is below ``min_bandwidth`` are left out
    of the grid (a mesh cannot resolve them); ``resolution_limited`` says whether the best
    kernel of the whole grid was one of them.

    Returns:
        ``{"covariance": (d, d) array, "shape": "scott" | "isotropic", "factor": c (times
        Scott's), "bandwidth": sqrt(det(H))**(1/d), "cv_score": ..., "scott_score": ...,
        "at_grid_edge": bool, "queries": Q}``.

    Raises:
        ValueError: Too few samples, or a singular sample covariance.
    """
    m, d = data.shape
    if m < max(d + 2, 3):
        raise ValueError(f"cross-validation needs at least {max(d + 2, 3)} samples, got {m}")
    scott = _scott_covariance(data)
    det = float(np.linalg.det(scott))
    if not det > 0:
        raise ValueError(
            "the sample covariance is singular (samples on a line or plane, or all equal); "
            "set bandwidth > 0"
        )
    rng = np.random.default_rng(_CV_SEED)
    nq = int(min(m, _CV_QUERIES, max(100, _CV_PAIRS // m)))
    q = np.sort(rng.choice(m, size=nq, replace=False))
    shapes = {"scott": scott, "isotropic": det ** (1.0 / d) * np.eye(d)}
    best: dict[str, object] = {}
    scott_score = None
    nk = _CV_FACTORS.size
    limited = False
    for name, H in shapes.items():
        L = np.asarray(scipy.linalg.cholesky(H, lower=True))
        score = _loo_scores(data, L, q)
        narrow = _CV_FACTORS * np.sqrt(np.linalg.eigvalsh(H)[0]) < min_bandwidth
        lowest = int(np.argmin(narrow)) if not narrow.all() else nk - 1
        # coarse to fine on the grid: every 4th factor, then the neighbours of the best one
        scores = np.full(nk, -np.inf)
        for k in [*range(0, nk, 4), lowest]:
            scores[k] = score(float(_CV_FACTORS[k]))
        top = int(np.argmax(scores))
        for k in range(max(0, top - 3), min(nk, top + 4)):
            if not np.isfinite(scores[k]):
                scores[k] = score(float(_CV_FACTORS[k]))
        allowed = np.where(narrow & (np.arange(nk) != nk - 1), -np.inf, scores)
        k = int(np.argmax(allowed))
        limited = limited or (bool(narrow[top]) and k == lowest)
        if name == "scott":
            one = int(np.argmin(np.abs(_CV_FACTORS - 1.0)))
            scott_score = float(scores[one]) if np.isfinite(scores[one]) else score(1.0)
        if not best or scores[k] > best["cv_score"]:  # type: ignore[operator]
            c = float(_CV_FACTORS[k])
            best = {
                "covariance": c * c * H,
                "shape": name,
                "factor": c,
                "bandwidth": c * det ** (0.5 / d),
                "cv_score": float(scores[k]),
                "at_grid_edge": k in (0, nk - 1),
            }
    best["resolution_limited"] = limited
    best["min_bandwidth"] = float(min_bandwidth)
    best["scott_score"] = scott_score
    best["scott_bandwidth"] = det ** (0.5 / d)
    best["queries"] = int(q.size)
    return best


def load_samples(path: str | Path, gdim: int) -> FloatArray:
    """Read an ``(M, gdim)`` array of points from a ``.npy`` file.

    Raises:
        RuntimeError: The file is missing or unreadable (chained to the cause).
        ValueError: The array is not ``(M, gdim)`` with ``M >= 1``, or has non-finite entries.
    """
    from beckmann._resources import read_npy  # regular file, header first: no pickle, no OOM

    try:
        samples = read_npy(path, "samples file")
    except ValueError as err:  # an unreadable file is a RuntimeError here
        raise RuntimeError(str(err)) from err
    if (
        samples.ndim != 2
        or samples.shape[1] != gdim
        or samples.shape[0] < 1
        or not np.issubdtype(samples.dtype, np.number)
    ):
        raise ValueError(
            f"samples {str(path)!r} must be a numeric (M, {gdim}) array for gdim={gdim}, "
            f"got shape {samples.shape} and dtype {samples.dtype}"
        )
    samples = np.asarray(samples, dtype=np.float64)
    if not np.all(np.isfinite(samples)):
        raise ValueError(f"samples {str(path)!r} has NaN or inf entries")
    return samples


class GaussianKDE:
    """Gaussian kernel density estimate ``(1/M) sum_j N(x; s_j, H)`` of samples ``s_j``.

    Bandwidth: ``bandwidth > 0`` gives the isotropic kernel ``H = bandwidth**2 * I`` (bandwidth
    is a standard deviation, in coordinate units). ``bandwidth = 0`` uses ``rule``: ``"scott"``,
    Scott's rule with the full sample covariance, ``H = M**(-2/(d+4)) * cov(samples)``, exactly
    as :class:`scipy.stats.gaussian_kde` does, so that rotated or correlated samples are smoothed
    along their own axes; ``"cv"``, the cross-validated kernel of :func:`cv_bandwidth`. The
    choice (rule, bandwidth ``sqrt(det H)**(1/d)``, scores) is in :attr:`description`.

    Coordinates are whitened by ``H``'s Cholesky factor, where the kernel is the standard normal.
    Three methods, chosen per call by ``method="auto"``:

    * ``direct``: exact summation, when points x samples <= 2e7;
    * ``grid``: linear binning of the samples on a regular grid over the (whitened) bounding box,
      padded by 6 kernel widths, a Gaussian filter (cut off at 5 widths), then multilinear
      interpolation. Grid spacing 0.1-0.35 kernel widths, the filter width corrected for the
      smoothing of binning and interpolation; relative error about 1e-3 of the peak. Built once
      and cached. Used when the grid has at most ~8M nodes;
    * ``tree``: a k-d tree sum over samples within 5 kernel widths, for kernels too narrow for
      the grid.

    Args:
        samples: Points, shape ``(M, d)``.
        bandwidth: Kernel standard deviation, or 0 for ``rule``.
        bbox: ``(lower, upper)`` corners of the region where the estimate is evaluated; needed
            by the grid method (points outside it are clamped onto it).
        method: ``auto``, ``direct``, ``grid`` or ``tree``.
        rule: ``"scott"`` or ``"cv"`` (used when ``bandwidth = 0``).
        min_bandwidth: ``"cv"`` only: the narrowest kernel axis allowed (e.g. from the mesh).

    Raises:
        ValueError: Bad bandwidth or method, or a singular sample covariance with Scott's rule.
    """

    def __init__(
        self,
        samples: npt.ArrayLike,
        *,
        bandwidth: float = 0.0,
        bbox: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
        method: str = "auto",
        rule: str = "scott",
        min_bandwidth: float = 0.0,
    ) -> None:
        data = np.asarray(samples, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] < 1 or not np.all(np.isfinite(data)):
            raise ValueError(f"samples must be a finite (M, d) array, got shape {data.shape}")
        bandwidth = real_number(bandwidth, "bandwidth")
        if bandwidth < 0:
            raise ValueError(f"bandwidth must be >= 0 (0 = Scott's rule), got {bandwidth!r}")
        if method not in ("auto", "direct", "grid", "tree"):
            raise ValueError(f"method must be auto, direct, grid or tree, got {method!r}")
        if rule not in BANDWIDTH_RULES:
            raise ValueError(f"bandwidth rule must be one of {BANDWIDTH_RULES}, got {rule!r}")
        m, d = data.shape
        self.description: dict[str, object]
        if bandwidth > 0:
            covariance = bandwidth**2 * np.eye(d)
            self.description = {"bandwidth_rule": "given", "bandwidth": bandwidth}
        elif rule == "scott":
            covariance = _scott_covariance(data)
            self.description = {
                "bandwidth_rule": "scott",
                "bandwidth": float(np.linalg.det(covariance)) ** (0.5 / d),
            }
        else:
            cv = cv_bandwidth(data, min_bandwidth)
            covariance = np.asarray(cv.pop("covariance"))
            self.description = {"bandwidth_rule": "cv", **cv}
        self.description["samples"] = int(m)
        eigenvalues = np.linalg.eigvalsh(covariance)
        if not eigenvalues[0] > 1e-12 * eigenvalues[-1]:
            raise ValueError(
                "the sample covariance is singular (samples on a line or plane, or all equal); "
                "set bandwidth > 0"
            )
        factor = scipy.linalg.cholesky(covariance, lower=True)
        self.covariance: FloatArray = covariance
        self.method = method
        self.bbox = None if bbox is None else check_bbox(bbox, d)
        self._factor = np.asarray(factor, dtype=np.float64)
        self._ys = self._whiten(data.T)
        # density in x = density of whitened points / det(factor)
        self._scale = 1.0 / (m * float(np.prod(np.diag(self._factor))))
        self._grid: tuple[FloatArray, FloatArray, FloatArray] | None = None
        self._grid_tried = False
        self._tree: scipy.spatial.cKDTree | None = None

    @property
    def dim(self) -> int:
        """Dimension ``d`` of the samples."""
        return int(self._ys.shape[0])

    def _whiten(self, x: FloatArray) -> FloatArray:
        return np.asarray(
            scipy.linalg.solve_triangular(self._factor, x, lower=True), dtype=np.float64
        )

    def __call__(self, x: FloatArray) -> FloatArray:
        """Evaluate at points ``x`` of shape ``(d, N)``; returns shape ``(N,)``."""
        yq = self._whiten(np.asarray(x, dtype=np.float64)[: self.dim])
        method = self.method
        if method == "auto":
            if yq.shape[1] * self._ys.shape[1] <= _KDE_DIRECT_PAIRS:
                method = "direct"
            elif self._build_grid() is not None:
                method = "grid"
            else:
                method = "tree"
        if method == "direct":
            return self._direct(yq)
        if method == "grid":
            grid = self._build_grid()
            if grid is None:
                raise ValueError("the grid method needs a bbox and a kernel wide enough for it")
            values, lo, step = grid
            return interpolate_grid(values, lo, step, yq)
        return self._tree_sum(yq)

    def _direct(self, yq: FloatArray) -> FloatArray:
        m = self._ys.shape[1]
        out = np.empty(yq.shape[1])
        chunk = max(1, 2**22 // m)
        for start in range(0, yq.shape[1], chunk):
            sl = slice(start, start + chunk)
            sq = np.zeros((yq[:, sl].shape[1], m))
            for k in range(self.dim):
                sq += (yq[k, sl, None] - self._ys[k, None, :]) ** 2
            out[sl] = np.exp(-0.5 * sq).sum(axis=1)
        return out * self._scale / (2.0 * np.pi) ** (self.dim / 2)

    def _tree_sum(self, yq: FloatArray) -> FloatArray:
        if self._tree is None:
            self._tree = scipy.spatial.cKDTree(self._ys.T)
        out = np.zeros(yq.shape[1])
        chunk = 2**14
        for start in range(0, yq.shape[1], chunk):
            block = yq[:, start : start + chunk]
            # "ndarray" output keeps pairs at distance exactly 0 (a sparse matrix would drop them)
            pairs = scipy.spatial.cKDTree(block.T).sparse_distance_matrix(
                self._tree, _KDE_TRUNCATE, output_type="ndarray"
            )
            out[start : start + block.shape[1]] = np.bincount(
                pairs["i"], weights=np.exp(-0.5 * pairs["v"] ** 2), minlength=block.shape[1]
            )
        return out * self._scale / (2.0 * np.pi) ** (self.dim / 2)

    def _build_grid(self) -> tuple[FloatArray, FloatArray, FloatArray] | None:
        if self._grid_tried:
            return self._grid
        self._grid_tried = True
        if self.bbox is None:
            return None
        lo_x, hi_x = self.bbox
        corners = np.array(list(itertools.product(*zip(lo_x, hi_x, strict=True)))).T
        wc = self._whiten(corners)
        pad = _KDE_TRUNCATE + 1.0
        lo = wc.min(axis=1) - pad
        extent = wc.max(axis=1) + pad - lo
        for delta, budget in _KDE_GRIDS:
            shape = tuple(int(s) for s in np.ceil(extent / delta).astype(int) + 1)
            if math.prod(shape) <= budget:
                break
        else:
            return None
        step = extent / (np.array(shape) - 1)
        inside = np.all((self._ys >= lo[:, None]) & (self._ys <= (lo + extent)[:, None]), axis=0)
        counts = bin_points(self._ys[:, inside], lo, step, shape)
        # Binning and interpolation each smooth by about step**2 / 6 in variance: take it off.
        sigma = np.sqrt(1.0 - step**2 / 3.0) / step
        smoothed = scipy.ndimage.gaussian_filter(
            counts, sigma=sigma, mode="constant", truncate=_KDE_TRUNCATE
        )
        values = smoothed * (self._scale / float(np.prod(step)))
        self._grid = (values, lo, step)
        return self._grid

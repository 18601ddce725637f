r"""Samples judged against data (``beckmann sample --reference DATA.npy``).

The distances of :mod:`~beckmann.transport.driver` compare the transported samples with the
*solved target density* :math:`p_1`; when :math:`p_1` is itself an estimate (a kernel density
estimate of data, a floor added), a perfect transport of :math:`p_1` can still be far from the
data. :func:`compare_to_data` measures the samples against the data themselves, each metric
beside its **noise floor**: the same metric between two disjoint subsets of the data of the same
size. With ``m`` points per set (``m = min(points, n_samples, M // 2)``, data size ``M``):

* ``A``, ``B``: two disjoint random subsets of the data, ``m`` points each;
* ``S``: ``m`` of the samples (a random subset);
* every value is the mean over ``repeats`` (default 5) independent draws of ``A, B, S``: one
  split's floor varies by a factor of several from draw to draw (the spread is reported);
* ``samples_vs_data`` compares ``S`` with ``A``; ``data_vs_data`` (the floor) compares ``B``
  with ``A``. A value at the floor means the samples are as close to the data as fresh data is.

Metrics:

* ``mmd2``: squared maximum mean discrepancy with the Gaussian kernel
  :math:`k(x, y) = \exp(-|x - y|^2 / (2 s^2))`, biased (V-statistic, :math:`\ge 0`) estimate
  :math:`\overline{k(S,S)} + \overline{k(A,A)} - 2\,\overline{k(S,A)}`. The bandwidth ``s`` is
  the median heuristic (median pairwise distance of ``A``, at most 2000 points of it) unless
  given;
* ``tv_histogram``: :math:`\tfrac12\sum_b |n_b/m - a_b/m|` on a regular grid of bins over the
  domain's bounding box (default about 50 points per bin);
* ``coverage``: with a radius ``r`` (default: the 0.95 quantile of the distance from a point of
  ``B`` to its nearest neighbour in ``A``), the fraction of ``S`` farther than ``r`` from every
  point of ``A`` (``far_from_data``: mass where the data have none) and of ``A`` farther than
  ``r`` from every point of ``S`` (``data_far_from_samples``: data not covered). The floor uses
  ``B`` in place of ``S``; with the default ``r`` its first fraction is 0.05 by construction.

Everything is local numpy/scipy on one rank (the driver runs it on rank 0), seeded, so the
result depends only on the samples, the data and the seed -- not on the number of ranks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.spatial

from beckmann.transport.stats import bin_counts, check_bins

__all__ = ["compare_to_data", "coverage", "gaussian_mmd2", "median_bandwidth"]

FloatArray = npt.NDArray[np.float64]

#: Quantile of the data-to-data nearest-neighbour distance used as the default coverage radius.
COVERAGE_QUANTILE = 0.95


def _kernel_mean(a: FloatArray, b: FloatArray, s: float, chunk: int = 1024) -> float:
    """Mean of ``exp(-|x − y|² / (2 s²))`` over all pairs of rows of ``a`` and ``b``."""
    total = 0.0
    bb = (b**2).sum(axis=1)
    for i in range(0, a.shape[0], chunk):
        blk = a[i : i + chunk]
        d2 = (blk**2).sum(axis=1)[:, None] + bb[None, :] - 2.0 * blk @ b.T
        total += float(np.exp(-np.maximum(d2, 0.0) / (2.0 * s * s)).sum())
    return total / (a.shape[0] * b.shape[0])


def gaussian_mmd2(x: FloatArray, y: FloatArray, s: float, yy: float | None = None) -> float:
    """Biased (V-statistic) MMD² of the Gaussian kernel of bandwidth ``s``; ``≥ 0``.

    ``yy`` is the kernel mean of ``y`` with itself when already known.
    """
    if not s > 0:
        raise ValueError(f"the MMD bandwidth must be positive, got {s!r}")
    yy = _kernel_mean(y, y, s) if yy is None else yy
    return max(0.0, _kernel_mean(x, x, s) + yy - 2.0 * _kernel_mean(x, y, s))


def median_bandwidth(x: FloatArray, max_points: int = 2000) -> float:
    """The median heuristic: the median distance between distinct rows of ``x[:max_points]``."""
    d = scipy.spatial.distance.pdist(x[:max_points])
    med = float(np.median(d)) if d.size else 0.0
    if not med > 0:
        raise ValueError("the data have no spread (all points equal): give the MMD bandwidth")
    return med


def coverage(x: FloatArray, y: FloatArray, r: float) -> dict[str, float]:
    """Fractions of ``x`` farther than ``r`` from all of ``y`` and of ``y`` from all of ``x``."""
    dx, _ = scipy.spatial.cKDTree(y).query(x, k=1)
    dy, _ = scipy.spatial.cKDTree(x).query(y, k=1)
    return {
        "far_from_data": float(np.mean(dx > r)),
        "data_far_from_samples": float(np.mean(dy > r)),
    }


def _tv(x: FloatArray, y: FloatArray, lo: FloatArray, hi: FloatArray, bins: int) -> float:
    cx = bin_counts(x, None, lo, hi, bins) / x.shape[0]
    cy = bin_counts(y, None, lo, hi, bins) / y.shape[0]
    return float(0.5 * np.abs(cx - cy).sum())


def _ratio(a: float, floor: float) -> float | None:
    return float(a / floor) if floor > 0 else None


def compare_to_data(
    samples: FloatArray,
    data: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    *,
    points: int = 2000,
    repeats: int = 5,
    seed: int = 0,
    bins: int | None = None,
    bandwidth: float | None = None,
    radius: float | None = None,
) -> dict[str, Any]:
    """Distances of ``samples`` to ``data``, each beside the data's own noise floor; local.

    See the module docstring for the subsets and metrics.

    Args:
        samples: ``(n, d)`` samples.
        data: ``(M, d)`` data points, ``M >= 4``.
        lo: Lower corner of the histogram box (the domain's bounding box).
        hi: Upper corner.
        points: Largest subset size ``m``.
        repeats: Number of random draws of the subsets; values are means over them.
        seed: Seed of the subsets.
        bins: Histogram bins per axis (default ``max(2, round((m / 50)**(1/d)))``).
        bandwidth: MMD kernel bandwidth (default: median heuristic).
        radius: Coverage radius (default: the 0.95 quantile of B-to-A neighbour distances).

    Returns:
        A strict-JSON-able dict (see the module docstring).

    Raises:
        ValueError: Fewer than 4 data points, mismatched dimensions, or bad settings.
    """
    samples = np.asarray(samples, dtype=np.float64)
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 4:
        raise ValueError(f"the reference data need at least 4 points, got shape {data.shape}")
    if samples.ndim != 2 or samples.shape[1] != data.shape[1]:
        raise ValueError(
            f"the reference data are {data.shape[1]}-dimensional, the samples "
            f"{samples.shape[1] if samples.ndim == 2 else '?'}-dimensional"
        )
    if not isinstance(points, int) or points < 2:
        raise ValueError(f"the number of compared points must be an integer >= 2, got {points!r}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    n, d = samples.shape
    M = data.shape[0]
    m = int(min(points, n, M // 2))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xDA7A]))
    nb = bins if bins is not None else max(2, round((m / 50.0) ** (1.0 / d)))
    check_bins(nb, d)
    s = r = None
    r_rule = "given" if radius is not None else (
        f"{COVERAGE_QUANTILE} quantile of the distance from B to its nearest point in A "
        "(first split)"
    )  # fmt: skip
    vals: dict[str, list[Any]] = {
        k: [] for k in ("mmd_s", "mmd_f", "tv_s", "tv_f", "cov_s", "cov_f")
    }
    for _ in range(repeats):
        perm = rng.permutation(M)
        A, B = data[perm[:m]], data[perm[m : 2 * m]]
        S = samples[np.sort(rng.choice(n, size=m, replace=False))] if m < n else samples
        if s is None:
            s = median_bandwidth(A) if bandwidth is None else float(bandwidth)
        if r is None:
            if radius is None:
                dist, _ = scipy.spatial.cKDTree(A).query(B, k=1)
                r = float(np.quantile(dist, COVERAGE_QUANTILE))
            else:
                r = float(radius)
            if not r > 0:
                raise ValueError(f"the coverage radius must be positive, got {r!r}")
        aa = _kernel_mean(A, A, s)
        vals["mmd_s"].append(gaussian_mmd2(S, A, s, aa))
        vals["mmd_f"].append(gaussian_mmd2(B, A, s, aa))
        vals["tv_s"].append(_tv(S, A, lo, hi, nb))
        vals["tv_f"].append(_tv(B, A, lo, hi, nb))
        vals["cov_s"].append(coverage(S, A, r))
        vals["cov_f"].append(coverage(B, A, r))
    mean = {k: float(np.mean(v)) for k, v in vals.items() if not k.startswith("cov")}
    spread = {k: float(np.std(v)) for k, v in vals.items() if not k.startswith("cov")}
    cov_s = {k: float(np.mean([c[k] for c in vals["cov_s"]])) for k in vals["cov_s"][0]}
    cov_f = {k: float(np.mean([c[k] for c in vals["cov_f"]])) for k in vals["cov_f"][0]}
    mmd_s, mmd_f, tv_s, tv_f = mean["mmd_s"], mean["mmd_f"], mean["tv_s"], mean["tv_f"]
    return {
        "data_points": int(M),
        "compared_points": m,
        "repeats": repeats,
        "sets": (
            f"A, B: disjoint random subsets of the data ({m} points each); S: {m} of the "
            "samples. samples_vs_data compares S with A; data_vs_data (the noise floor) "
            f"compares B with A; each value is the mean over {repeats} random draws of A, B, S "
            "(spread: their standard deviation)"
        ),
        "mmd2": {
            "samples_vs_data": mmd_s,
            "data_vs_data": mmd_f,
            "ratio_to_floor": _ratio(mmd_s, mmd_f),
            "spread": {"samples_vs_data": spread["mmd_s"], "data_vs_data": spread["mmd_f"]},
            "kernel": "gaussian exp(-|x-y|^2 / (2 s^2))",
            "bandwidth": s,
            "bandwidth_rule": "median pairwise distance of A" if bandwidth is None else "given",
            "estimator": "biased (V-statistic)",
        },
        "tv_histogram": {
            "samples_vs_data": tv_s,
            "data_vs_data": tv_f,
            "ratio_to_floor": _ratio(tv_s, tv_f),
            "bins_per_axis": int(nb),
        },
        "coverage": {
            "radius": r,
            "radius_rule": r_rule,
            "samples_vs_data": cov_s,
            "data_vs_data": cov_f,
        },
    }

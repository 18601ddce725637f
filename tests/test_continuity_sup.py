"""The continuity stream's pair sup in cache-sized blocks: equal to the whole-array sup."""

from __future__ import annotations

import numpy as np
import pytest

from beckmann.sweep import continuity


@pytest.mark.parametrize("shape", [(0,), (5,), (70001,), (70001, 2), (40000, 3), (7, 2)])
def test_sup_diff_is_the_brute_force_sup(shape, monkeypatch):
    monkeypatch.setattr(continuity, "SUP_BLOCK", 1 << 14)  # several blocks, a partial last one
    rng = np.random.default_rng(len(shape) * 100 + shape[0] % 97)
    scratch: dict = {}
    for far in (None, 0, -1):  # the largest difference anywhere, in the first or last row
        a, b = rng.standard_normal(shape), rng.standard_normal(shape)
        if far is not None and shape[0]:
            a[far] += 50.0
        d = a - b
        want = 0.0 if not shape[0] else (
            np.abs(d).max() if d.ndim == 1 else np.sqrt((d * d).sum(axis=1)).max())
        got = continuity._sup_diff(a, b, scratch)  # the work arrays reused between calls
        assert got == pytest.approx(want, rel=1e-15, abs=0.0), (shape, far)


@pytest.mark.parametrize("shape", [(70001,), (70001, 2), (3, 2), (20000, 1), (20000, 3)])
def test_sup_diffs_against_several_partners_in_one_pass(shape, monkeypatch):
    monkeypatch.setattr(continuity, "SUP_BLOCK", 1 << 14)
    rng = np.random.default_rng(7)
    cur = rng.standard_normal(shape)
    olds = [rng.standard_normal(shape) * s for s in (1.0, 3.0, 0.5)]
    olds[1][-1] += 40.0  # the largest in the last (partial) block of one partner only
    want = [np.abs(o - cur).max() if cur.ndim == 1 else np.sqrt(((o - cur) ** 2).sum(1)).max()
            for o in olds]
    got = continuity._sup_diffs(olds, cur, {})
    assert got == pytest.approx(want, rel=1e-15, abs=0.0)
    assert continuity._sup_diffs([], cur) == []

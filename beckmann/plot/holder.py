"""The Hölder picture: moduli of continuity ω(δ) on log–log axes (matplotlib, off-screen).

:func:`find_moduli` collects every ``{"scales": [...], "modulus": [...]}`` from the JSON that
``beckmann holder --json-out`` writes; :func:`plot_moduli` draws them with the fitted power law
as a dashed guide. Serial; no MPI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Modulus", "find_moduli", "plot_moduli"]

FloatArray = npt.NDArray[np.float64]

#: ``(label, scales, modulus, exponent)``; ``exponent`` is NaN when none was fitted.
Modulus = tuple[str, FloatArray, FloatArray, float]


def find_moduli(obj: Any, label: str = "") -> list[Modulus]:
    """Every ``{"scales": [...], "modulus": [...]}`` inside a JSON value.

    Returns:
        ``(label, scales, modulus, exponent)`` per modulus found; ``exponent`` is the fitted
        estimate when the dict has one, else NaN. Labels come from ``field``/``name`` entries or
        the keys leading to the dict.
    """
    found: list[Modulus] = []
    if isinstance(obj, dict):
        tag = obj.get("field", obj.get("name"))
        here = f"{label} {tag}".strip() if isinstance(tag, str) else label
        if "time" in obj and isinstance(obj["time"], int | float):
            here = f"{here} t={obj['time']:g}"
        s, m = obj.get("scales"), obj.get("modulus")
        if isinstance(s, list) and isinstance(m, list) and len(s) == len(m) and len(s) > 1:
            try:
                sc, mo = np.asarray(s, dtype=float), np.asarray(m, dtype=float)
            except (TypeError, ValueError):
                sc = mo = np.empty(0)
            if sc.ndim == 1 and sc.size:
                ex = obj.get("exponent")
                ex = ex.get("estimate") if isinstance(ex, dict) else ex
                expo = float(ex) if isinstance(ex, int | float) else float("nan")
                found.append((here or "modulus", sc, mo, expo))
        for k, v in obj.items():
            if k not in ("scales", "modulus", "config"):
                found += find_moduli(v, f"{here} {k}".strip() if isinstance(v, dict) else here)
    elif isinstance(obj, list):
        for v in obj:
            found += find_moduli(v, label)
    return found


def plot_moduli(moduli: list[Modulus], path: Path) -> Path:
    """Draw moduli ``ω(δ)`` on log–log axes into the PNG ``path``; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for label, s, m, expo in moduli:
        ok = (s > 0) & (m > 0) & np.isfinite(m)
        if not ok.any():
            continue
        name = f"{label} (α ≈ {expo:.2f})" if np.isfinite(expo) else label
        (line,) = ax.loglog(s[ok], m[ok], "o-", ms=3, label=name)
        if np.isfinite(expo):
            # the fitted power law through the modulus' geometric mean, as a dashed guide
            c = np.exp(np.mean(np.log(m[ok]) - expo * np.log(s[ok])))
            ax.loglog(s[ok], c * s[ok] ** expo, "--", color=line.get_color(), lw=1)
    ax.set_xlabel("scale δ")
    ax.set_ylabel("modulus of continuity ω(δ)")
    ax.set_title("Hölder moduli")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""The Hölder picture: moduli of continuity ω(δ) on log–log axes (matplotlib, off-screen).

:func:`find_moduli` collects every ``{"scales": [...], "modulus": [...]}`` from the JSON that
``beckmann holder --json-out`` writes; :func:`plot_moduli` draws them with the fitted power law
as a dashed guide (``beckmann plot``). :func:`plot_modulus` draws one estimate with its fitted
slope and band (``beckmann holder --plot``), :func:`plot_study` the moduli of every level and the
exponents against h (``beckmann study``). Serial; no MPI.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Modulus",
    "find_moduli",
    "plot_modulus",
    "plot_moduli",
    "plot_study",
    "save_figure",
]

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
    save_figure(fig, path, dpi=100)
    return path


def _pyplot() -> Any:
    """Pyplot of matplotlib on the off-screen Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> None:
    """Lay out and write ``fig`` to ``path``, then close it; a write failure names the file."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        fig.savefig(path, dpi=dpi)
    except OSError as err:
        raise RuntimeError(f"cannot write the plot {str(path)!r}: {err}") from err
    finally:
        plt.close(fig)


def plot_modulus(result: dict[str, Any], path: str) -> None:
    """Write ``log ω`` against ``log δ`` with the fitted slope to ``path`` (matplotlib, Agg).

    Used by ``beckmann holder --plot``. Not collective (rank 0).
    """
    plt = _pyplot()

    s = np.asarray(result["scales"])
    w = np.asarray(result["modulus"])
    e = result["exponent"]
    fig, ax = plt.subplots(figsize=(5, 4))
    ok = w > 0
    ax.loglog(s[ok], w[ok], "o-", label=rf"$\omega(\delta)$ of $D^{{{result['k']}}}u$")
    win = (s >= result["delta_min"] * (1 - 1e-12)) & (s <= result["delta_max"] * (1 + 1e-12)) & ok
    est = e["estimate"]
    if np.any(win) and est is not None and math.isfinite(est):
        sw = s[win]
        x0, y0 = np.log(sw).mean(), np.log(w[win]).mean()
        for slope, style, lab in (
            (est, "-", f"slope {est:.3f}"),
            (e["low"], ":", f"band [{e['low']:.3f}, {e['high']:.3f}]"),
            (e["high"], ":", None),
        ):
            ax.loglog(sw, np.exp(y0 + slope * (np.log(sw) - x0)), "k" + style, lw=1, label=lab)
    ax.axvline(result["delta_min"], color="0.6", lw=0.8)
    ax.set_xlabel(r"$\delta$")
    ax.set_ylabel(r"$\omega(\delta)$")
    ax.set_title(f"{result['field']}: k={result['k']}, h={result['h']:.3g}")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=120)


def plot_study(res: dict[str, Any], path: str | Path) -> None:
    """Draw ω(δ) of every field and level, and the exponents against h, into ``path``.

    Used by ``beckmann study``. Not collective (rank 0).
    """
    plt = _pyplot()

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for lv in res["levels"]:
        for f, r in lv["fields"].items():
            w = [max(x, 1e-300) for x in r["modulus"]]
            a1.loglog(r["scales"], w, "o-", ms=2, label=f"{f} h={lv['h']:.3g}")
    a1.set_xlabel("δ")
    a1.set_ylabel("ω(δ)")
    a1.legend(fontsize=6)
    hs = [lv["h"] for lv in res["levels"]]
    for f, s in res["fields"].items():
        ys = [math.nan if y is None else y for y in s["exponents"]]
        a2.semilogx(hs, ys, "o-", label=f)
    a2.set_xlabel("h")
    a2.set_ylabel("headline exponent")
    a2.legend(fontsize=8)
    save_figure(fig, path, dpi=110)

"""Buffer scores of road centerlines: completeness, correctness and quality (Wiedemann 1998).

A piece of one line set is *matched* when it lies within ``buffer_m`` metres of the other set
(inside the round-capped buffer, the Minkowski sum with a disc). With lengths in metres::

    completeness = matched truth length / truth length
    correctness  = matched prediction length / prediction length
    quality      = matched prediction length
                   / (prediction length + unmatched truth length)

Quality is Wiedemann's TP / (TP + FP + FN) with TP and FP measured on the prediction
(TP + FP = prediction length) and FN on the truth (truth length - matched truth length).

Matching never builds one union of all buffers: an STRtree finds, for every line, the lines of
the other set within ``buffer_m``; only their buffers are unioned, and the line is clipped to
that local union. The result equals clipping to the global union, because buffers that do
not come within ``buffer_m`` of a line cannot intersect it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from roadnet.errors import InputError

__all__ = ["BufferScores", "buffer_scores", "matched_length", "matched_lengths"]

_LINE_TYPES = frozenset({"LineString", "LinearRing", "MultiLineString"})


@dataclass(frozen=True)
class BufferScores:
    """Completeness, correctness and quality of predicted centerlines within a buffer.

    Attributes:
        completeness: Matched truth length / truth length, in [0, 1].
        correctness: Matched prediction length / prediction length, in [0, 1].
        quality: Matched prediction length / (prediction length + unmatched truth length).
        truth_length_m: Total truth length in metres.
        prediction_length_m: Total prediction length in metres.
        matched_truth_length_m: Truth length within ``buffer_m`` of the prediction.
        matched_prediction_length_m: Prediction length within ``buffer_m`` of the truth.
        buffer_m: The buffer distance used, in metres.
    """

    completeness: float
    correctness: float
    quality: float
    truth_length_m: float
    prediction_length_m: float
    matched_truth_length_m: float
    matched_prediction_length_m: float
    buffer_m: float


def _as_lines(geoms: Any, name: str) -> np.ndarray:
    """Return the non-empty line geometries of ``geoms`` as a 1-D object array.

    Accepts one shapely geometry, a sequence or numpy array of them, or a GeoSeries. A
    GeoSeries in a geographic CRS is refused (its lengths would be degrees, not metres).
    """
    crs = getattr(geoms, "crs", None)
    if crs is not None and getattr(crs, "is_geographic", False):
        raise InputError(f"{name} is in a geographic CRS ({crs}); reproject it to metres first")
    if isinstance(geoms, BaseGeometry):
        arr = np.array([geoms], dtype=object)
    else:
        values = getattr(geoms, "values", geoms)  # GeoSeries -> GeometryArray
        if not hasattr(values, "__array__") and not isinstance(values, list | tuple):
            values = list(values)  # any other iterable
        arr = np.asarray(values, dtype=object).ravel()
    if arr.size and not all(g is None or isinstance(g, BaseGeometry) for g in arr):
        raise InputError(f"{name} must hold shapely geometries")
    keep = ~(shapely.is_missing(arr) | shapely.is_empty(arr))
    lines: np.ndarray = arr[keep]
    bad = {g.geom_type for g in lines} - _LINE_TYPES
    if bad:
        raise InputError(f"{name} must hold line geometries, got {sorted(bad)}")
    return lines


def matched_length(lines: Any, other: Any, *, buffer_m: float) -> float:
    """Total length of ``lines`` lying within ``buffer_m`` metres of ``other``.

    Args:
        lines: Line geometries (a geometry, a sequence, a ``(n,)`` object array or a
            GeoSeries) in a projected CRS in metres.
        other: Line geometries in the same CRS.
        buffer_m: Buffer distance in metres (> 0).

    Returns:
        The length in metres of the parts of ``lines`` inside the union of the round-capped
        buffers of ``other``. Overlapping lines in ``lines`` count each time.

    Raises:
        InputError: If ``buffer_m`` is not positive or an input holds non-line geometries.
    """
    if not buffer_m > 0:
        raise InputError(f"buffer_m must be > 0, got {buffer_m}")
    a = _as_lines(lines, "lines")
    b = _as_lines(other, "other")
    return _matched_length(a, b, buffer_m)


def matched_lengths(lines: Any, other: Any, *, buffer_m: float) -> np.ndarray:
    """Length of every line of ``lines`` lying within ``buffer_m`` metres of ``other``.

    Like :func:`matched_length`, one value per non-empty line of ``lines``, in their order
    (missing and empty geometries are dropped first), so a caller can sum them by group.

    Returns:
        A ``(n,)`` float64 array of lengths in metres.

    Raises:
        InputError: If ``buffer_m`` is not positive or an input holds non-line geometries.
    """
    if not buffer_m > 0:
        raise InputError(f"buffer_m must be > 0, got {buffer_m}")
    return _matched_lengths(_as_lines(lines, "lines"), _as_lines(other, "other"), buffer_m)


def _matched_length(a: np.ndarray, b: np.ndarray, buffer_m: float) -> float:
    """Length of the ``(n,)`` lines ``a`` inside the buffers of the ``(m,)`` lines ``b``."""
    return float(_matched_lengths(a, b, buffer_m).sum())


def _matched_lengths(a: np.ndarray, b: np.ndarray, buffer_m: float) -> np.ndarray:
    """Per line of the ``(n,)`` lines ``a``, its length inside the buffers of ``b``."""
    out = np.zeros(a.size)
    if a.size == 0 or b.size == 0:
        return out
    ia, ib = shapely.STRtree(b).query(a, predicate="dwithin", distance=buffer_m)
    if ia.size == 0:
        return out
    order = np.lexsort((ib, ia))
    ia, ib = ia[order], ib[order]
    near_a, starts = np.unique(ia, return_index=True)
    used = np.unique(ib)
    buffers = np.empty(b.size, dtype=object)
    buffers[used] = shapely.buffer(b[used], buffer_m)
    local = np.empty(near_a.size, dtype=object)
    for k, js in enumerate(np.split(ib, starts[1:])):
        local[k] = buffers[js[0]] if js.size == 1 else shapely.union_all(buffers[js])
    out[near_a] = shapely.length(shapely.intersection(a[near_a], local))
    return out


def _ratio(num: float, den: float, *, other_empty: bool) -> float:
    """``num / den``; for ``den == 0``, 1.0 when the other set is empty too, else 0.0."""
    if den > 0:
        return min(1.0, num / den)
    return 1.0 if other_empty else 0.0


def buffer_scores(truth: Any, prediction: Any, *, buffer_m: float) -> BufferScores:
    """Score predicted road centerlines against truth centerlines within a buffer.

    Definitions (lengths in metres, Wiedemann 1998)::

        completeness = matched_truth / truth
        correctness  = matched_prediction / prediction
        quality      = matched_prediction / (prediction + truth - matched_truth)

    Empty inputs (no non-empty line after dropping missing and empty geometries) never
    raise. A ratio whose denominator is 0 is 1.0 when the other set is empty too and 0.0
    otherwise, so:

    * truth and prediction empty: completeness = correctness = quality = 1.0;
    * prediction empty, truth not: completeness = 0, correctness = 0, quality = 0;
    * truth empty, prediction not: completeness = 0, correctness = 0, quality = 0.

    An empty prediction therefore never scores well against roads that exist.

    Args:
        truth: Truth centerlines: a shapely line geometry, a sequence or ``(n,)`` object
            array of them, or a GeoSeries, in a projected CRS in metres.
        prediction: Predicted centerlines, same forms and the same CRS as ``truth``.
        buffer_m: Buffer distance in metres (> 0), e.g. half a road width.

    Returns:
        The three scores and the lengths they are made of.

    Raises:
        InputError: If ``buffer_m`` is not positive, an input holds non-line geometries, a
            GeoSeries is in a geographic CRS, or two GeoSeries have different CRSs.
    """
    if not buffer_m > 0:
        raise InputError(f"buffer_m must be > 0, got {buffer_m}")
    crs_t, crs_p = getattr(truth, "crs", None), getattr(prediction, "crs", None)
    if crs_t is not None and crs_p is not None and crs_t != crs_p:
        raise InputError(f"truth CRS {crs_t} differs from prediction CRS {crs_p}")
    t = _as_lines(truth, "truth")
    p = _as_lines(prediction, "prediction")
    truth_len = float(shapely.length(t).sum())
    pred_len = float(shapely.length(p).sum())
    matched_t = min(truth_len, _matched_length(t, p, buffer_m))
    matched_p = min(pred_len, _matched_length(p, t, buffer_m))
    t_empty, p_empty = truth_len == 0, pred_len == 0
    return BufferScores(
        completeness=_ratio(matched_t, truth_len, other_empty=p_empty),
        correctness=_ratio(matched_p, pred_len, other_empty=t_empty),
        quality=_ratio(matched_p, pred_len + truth_len - matched_t, other_empty=t_empty),
        truth_length_m=truth_len,
        prediction_length_m=pred_len,
        matched_truth_length_m=matched_t,
        matched_prediction_length_m=matched_p,
        buffer_m=float(buffer_m),
    )

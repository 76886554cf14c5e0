"""The Numenta Anomaly Benchmark's scoring, written from its published rules (NAB's sweeper).

Per file: the first ``probation_rows(n)`` rows are not scored. A row inside a labelled window
``[left, right]`` (row indices, inclusive) would, if detected, earn
``tp · sig(-(right - i + 1) / width) / sig(-1)``, where ``sig(p) = 2 / (1 + e^{5p}) - 1`` is NAB's scaled
sigmoid and ``width = right - left + 1``: full credit at the left edge, nearly none at the right.
Only a window's best (earliest) detection counts; a window without any costs ``fn``. A row outside
every window costs ``fp · sig(d)`` (sig is negative there): ``d = 3`` (the full ``fp``) before the first
window, and after a window ``d = (i - right) / (width - 1)``, so a false alarm just after a window
costs less than one far from it.

The threshold is chosen as NAB's sweeper does: one threshold for the whole corpus, the one that
maximises the summed score over every distinct score value. The result is normalised as
``100 · (S - S_null) / (S_perfect - S_null)``; the null detector (never fires) scores
``-fn · windows`` and the perfect one (fires at each window's left edge) ``tp · windows``, counting
windows with at least one scored row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from shopfloor.domain.errors import InvalidInput


@dataclass(frozen=True)
class Profile:
    """NAB's cost matrix."""

    tp: float = 1.0
    fp: float = 0.11
    fn: float = 1.0


STANDARD = Profile()


def scaled_sigmoid(position: float) -> float:
    """NAB's sig: about 0.987 at -1 (a window's left edge), 0 at 0 (its right edge), -1 from 3 on."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_rows(n_rows: int, fraction: float = 0.15) -> int:
    """min(⌊0.15·N⌋, 750) rows (NAB: min(⌊fraction·N⌋, fraction·5000))."""
    return int(min(math.floor(fraction * n_rows), fraction * 5000))


@dataclass(frozen=True)
class ScoredRow:
    """One scorable row: its detector score, what detecting it is worth, and its window (or None)."""

    score: float
    worth: float
    window: int | None


@dataclass
class NabFile:
    """One file's detector scores (one per row) and its windows as inclusive row-index pairs."""

    name: str
    scores: Sequence[float]
    windows: Sequence[tuple[int, int]]


@dataclass
class FileResult:
    name: str
    score: float
    windows: int
    detected: int
    false_positives: int


@dataclass
class NabResult:
    threshold: float
    raw: float
    null: float
    perfect: float
    normalized: float
    files: list[FileResult] = field(default_factory=list)


def sweep_rows(n_rows: int, windows: Sequence[tuple[int, int]], profile: Profile = STANDARD,
               window_offset: int = 0, scores: Sequence[float] | None = None) -> list[ScoredRow]:
    """The scorable rows of one file (probation left out), windows numbered from ``window_offset``."""
    if scores is not None and len(scores) != n_rows:
        raise InvalidInput(f"{len(scores)} scores for {n_rows} rows")
    ordered = sorted(windows)
    for k, (a, b) in enumerate(ordered):
        if not 0 <= a <= b < n_rows or (k + 1 < len(ordered) and ordered[k + 1][0] <= b):
            raise InvalidInput(f"window {(a, b)} is outside 0..{n_rows - 1} or overlaps the next one")
    probation = probation_rows(n_rows)
    max_tp = scaled_sigmoid(-1.0)
    rows: list[ScoredRow] = []
    w = 0
    prev_right: int | None = None
    prev_width = 0
    for i in range(n_rows):
        current = w < len(ordered) and ordered[w][0] <= i
        if current:
            left, right = ordered[w]
            width = right - left + 1
            worth = scaled_sigmoid(-(right - i + 1) / width) * profile.tp / max_tp
        elif prev_right is None:
            worth = scaled_sigmoid(3.0) * profile.fp
        else:
            worth = scaled_sigmoid(abs(prev_right - i) / max(prev_width - 1, 1)) * profile.fp
        if i >= probation:
            rows.append(ScoredRow(scores[i] if scores is not None else 0.0, worth,
                                  window_offset + w if current else None))
        if current and i == ordered[w][1]:
            prev_right, prev_width = i, ordered[w][1] - ordered[w][0] + 1
            w += 1
    return rows


def sweep(rows: Sequence[ScoredRow], profile: Profile = STANDARD) -> list[tuple[float, float]]:
    """(threshold, score) for every distinct threshold, highest first; detection means score >= threshold.

    The first pair is (+inf, score of no detection at all).
    """
    windows = {r.window for r in rows if r.window is not None}
    best: dict[int, float] = {w: -profile.fn for w in windows}
    fp_sum = 0.0
    total = -profile.fn * len(windows)
    out: list[tuple[float, float]] = [(math.inf, total)]
    ordered = sorted(rows, key=lambda r: r.score, reverse=True)
    i = 0
    while i < len(ordered):
        t = ordered[i].score
        while i < len(ordered) and ordered[i].score == t:
            r = ordered[i]
            if r.window is None:
                fp_sum += r.worth
            elif r.worth > best[r.window]:
                best[r.window] = r.worth
            i += 1
        out.append((t, fp_sum + sum(best.values())))
    return out


def score_at(rows: Sequence[ScoredRow], threshold: float, profile: Profile = STANDARD) -> tuple[float, int, int, int]:
    """(score, windows, windows detected, false positives) of one file's rows at ``threshold``."""
    windows = {r.window for r in rows if r.window is not None}
    best: dict[int, float] = {w: -profile.fn for w in windows}
    fp_sum, fps = 0.0, 0
    detected: set[int] = set()
    for r in rows:
        if r.score < threshold:
            continue
        if r.window is None:
            fp_sum += r.worth
            fps += 1
        else:
            detected.add(r.window)
            best[r.window] = max(best[r.window], r.worth)
    return fp_sum + sum(best.values()), len(windows), len(detected), fps


def nab_score(files: Sequence[NabFile], profile: Profile = STANDARD) -> NabResult:
    """Score a corpus: one threshold for all files (NAB's sweep), then normalise."""
    per_file: list[list[ScoredRow]] = []
    offset = 0
    for f in files:
        per_file.append(sweep_rows(len(f.scores), f.windows, profile, offset, f.scores))
        offset += len(f.windows)
    everything = [r for rows in per_file for r in rows]
    pairs = sweep(everything, profile)
    threshold, raw = max(pairs, key=lambda p: (p[1], p[0]))
    results = []
    n_windows = 0
    for f, rows in zip(files, per_file, strict=True):
        s, nw, det, fps = score_at(rows, threshold, profile)
        n_windows += nw
        results.append(FileResult(f.name, s, nw, det, fps))
    null, perfect = -profile.fn * n_windows, profile.tp * n_windows
    normalized = 100.0 * (raw - null) / (perfect - null) if perfect > null else 0.0
    return NabResult(threshold, raw, null, perfect, normalized, results)

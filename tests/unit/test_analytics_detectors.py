"""Each detector passes the conformance suite and behaves as documented on small known series."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable

import pytest

from shopfloor.domain.analytics import (
    Detector,
    Ensemble,
    HalfSpaceTrees,
    NewExtremeDetector,
    PcaT2QDetector,
    SeasonalMedianDetector,
    WindowedGaussianDetector,
    detector_from_state,
    score_and_update,
)
from shopfloor.domain.errors import InvalidInput
from shopfloor.testing.detector_contract import check_detector

H_US = 3600 * 1_000_000

FACTORIES: dict[str, tuple[Callable[[], Detector], int]] = {
    "seasonal_median": (lambda: SeasonalMedianDetector(slot_s=3600, window=16, min_count=4), 1),
    "rolling_median": (lambda: SeasonalMedianDetector(period_s=60, slot_s=60, window=50), 1),
    "windowed_gaussian": (lambda: WindowedGaussianDetector(window=200, short=3), 1),
    "half_space_trees": (lambda: HalfSpaceTrees(1, n_trees=10, height=8, window_size=100), 1),
    "half_space_trees_3d": (lambda: HalfSpaceTrees(3, n_trees=10, height=8, window_size=100), 3),
    "pca_t2q": (lambda: PcaT2QDetector(4, fit_rows=300), 4),
    "ensemble": (lambda: Ensemble([WindowedGaussianDetector(window=100), SeasonalMedianDetector(window=8)],
                                  suppress=20, history=500), 1),
    "new_extreme": (lambda: NewExtremeDetector(tolerance=0.05, rest=10), 1),
    "new_extreme_short": (lambda: NewExtremeDetector(tolerance=0.05, rest=10, short=4), 1),
    "ensemble_weighted": (lambda: Ensemble([NewExtremeDetector(), WindowedGaussianDetector(window=100)],
                                           calibrate=False, weights=[1.0, 0.999], suppress=20), 1),
    "ensemble_smoothed": (lambda: Ensemble([PcaT2QDetector(3, fit_rows=200)], calibrate=False, smooth=10), 3),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_detector_passes_the_conformance_suite(name: str) -> None:
    make, n = FACTORIES[name]
    check_detector(make, n)


def test_seasonal_baseline_compares_each_hour_with_the_same_hour() -> None:
    det = SeasonalMedianDetector(slot_s=3600, window=10, min_count=5)
    for day in range(10):  # 02:00 is always 5, 14:00 always 50, with a little wobble
        for hour, level in ((2, 5.0), (14, 50.0)):
            score_and_update(det, (day * 24 + hour) * H_US, level + 0.1 * (day % 3))
    night, afternoon = 10 * 24 * H_US + 2 * H_US, 10 * 24 * H_US + 14 * H_US
    assert det.baseline(night) == pytest.approx((5.1, max(1.4826 * 0.1, 0.1 * math.sqrt(0.18 / 10 * 3) / 1)), rel=0.5)
    assert det.score(night, 5.1) < 0.2  # normal for the night
    assert det.score(night, 50.0) > 0.9  # the afternoon level at night is an anomaly
    assert det.score(afternoon, 50.0) < 0.2
    assert det.zscore(night, 5.1 + 3 * det.baseline(night)[1]) == pytest.approx(3.0)
    assert det.score(night, 5.1 + 3 * det.baseline(night)[1]) == pytest.approx(0.5)  # z = 3 -> 0.5
    assert SeasonalMedianDetector().score(0, 1.0) == 0.0  # still learning


def test_windowed_gaussian_short_mean_finds_a_level_shift_single_points_hide() -> None:
    rng = random.Random(3)
    spike, shift = WindowedGaussianDetector(window=300, short=1), WindowedGaussianDetector(window=300, short=10)
    for i in range(300):
        x = rng.gauss(0.0, 1.0)
        score_and_update(spike, i, x)
        score_and_update(shift, i, x)
    shifted = [1.5 + rng.gauss(0.0, 1.0) for _ in range(10)]  # a 1.5-sigma level shift
    s_spike = [score_and_update(spike, 300 + i, x) for i, x in enumerate(shifted)]
    s_shift = [score_and_update(shift, 300 + i, x) for i, x in enumerate(shifted)]
    assert max(s_shift) > 0.6 > max(s_spike) - 0.2
    assert s_shift[-1] > s_spike[-1]


def test_half_space_trees_learn_their_limits_then_flag_empty_space() -> None:
    det = HalfSpaceTrees(2, n_trees=20, height=8, window_size=50, seed=1)
    rng = random.Random(5)
    scores = [score_and_update(det, i, [rng.gauss(0, 1), rng.gauss(10, 1)]) for i in range(400)]
    assert scores[:50] == [0.0] * 50 and scores[50] > 0.0  # the first window sets limits and the first mass
    inside, far = det.score(0, [0.0, 10.0]), det.score(0, [3.0, 6.0])
    assert far > inside
    assert det.score(0, [math.inf, 0.0]) == 1.0
    with pytest.raises(InvalidInput):
        HalfSpaceTrees(2, limits=[(0.0, 1.0)])


def test_pca_t2q_separates_a_broken_correlation_from_a_large_normal_move() -> None:
    rng = random.Random(9)
    rows = []
    for _ in range(500):
        load = rng.gauss(0.0, 1.0)
        rows.append([load + rng.gauss(0, 0.05), 2 * load + rng.gauss(0, 0.05), -load + rng.gauss(0, 0.05)])
    det = PcaT2QDetector(3, n_components=1).fit(rows)
    assert det.fitted and det.components is not None and det.components.shape == (1, 3)
    t2_big, q_big = det.statistics([2.5, 5.0, -2.5])  # far along the model direction
    _, q_off = det.statistics([1.0, -2.0, 1.0])  # sensors disagree
    assert t2_big > det.t2_limit and q_big < det.q_limit
    assert q_off > 10 * det.q_limit
    assert det.score(0, [0.0, 0.0, 0.0]) < 0.5 < det.score(0, [1.0, -2.0, 1.0])
    t2, q = det.statistics(rows[0])
    r = max(t2 / det.t2_limit, q / det.q_limit)
    assert det.score(0, rows[0]) == pytest.approx(r / (1 + r))
    streaming = PcaT2QDetector(3, n_components=1, fit_rows=500)
    for i, row in enumerate(rows):
        assert streaming.score(i, row) == 0.0
        streaming.update(i, row)
    assert streaming.fitted and streaming.score(0, [1.0, -2.0, 1.0]) == pytest.approx(det.score(0, [1.0, -2.0, 1.0]))
    with pytest.raises(InvalidInput):
        PcaT2QDetector(1)
    with pytest.raises(InvalidInput):
        PcaT2QDetector(3).fit(rows[:3])


def test_ensemble_suppresses_repeats_and_smooths() -> None:
    ens = Ensemble([WindowedGaussianDetector(window=50)], calibrate=False, suppress=5)
    out = [score_and_update(ens, i, 0.0 if i % 2 else 1.0) for i in range(60)]
    out += [score_and_update(ens, 60 + i, 40.0) for i in range(4)]
    assert out[60] > 0.9 and out[61:] == [0.0, 0.0, 0.0]  # one alarm per event, at its start
    smooth = Ensemble([PcaT2QDetector(2, fit_rows=50)], calibrate=False, smooth=4)
    twin = PcaT2QDetector(2, fit_rows=50)
    raw, sm = [], []
    for i in range(80):
        x = [float(i % 7), float(i % 7) * 2 + (i % 3) * 0.1]
        raw.append(score_and_update(twin, i, x))
        sm.append(score_and_update(smooth, i, x))
    assert sm[-1] == pytest.approx(sum(raw[-4:]) / 4)
    with pytest.raises(InvalidInput):
        Ensemble([])


def test_new_extreme_fires_once_per_record_run_then_rests() -> None:
    det = NewExtremeDetector(tolerance=0.1, rest=3, min_count=4)
    series = [5.0, 1.0, 9.0, 3.0, 5.0, 9.5, 11.0, 12.0, 13.0, 14.0, 15.0, -1.0, 5.0, 17.0, 5.0]
    out = [score_and_update(det, i, x) for i, x in enumerate(series)]
    # learning the range [1, 9] from the first four; 9.5 is inside its 10 % margin (9 + 0.8)
    assert out[:6] == [0.0] * 6
    # 11 > 9.5 + 0.85 is new; the records 12, 13, 14 fall in the rest period of 3 rows
    assert out[6] == 1.0 and out[7:10] == [0.0, 0.0, 0.0]
    assert out[10] == 0.0  # 15 < 14 + 1.3: inside the widened range [1, 14]
    assert out[11] == 1.0  # -1 < 1 - 1.4: a new low
    assert out[12:] == [0.0, 0.0, 0.0]  # resting again, although 17 is a record
    assert det.score(15, 18.0) == 0.0  # range [-1, 17], margin 1.8
    assert det.score(15, 19.0) == 1.0 and det.score(15, math.nan) == 0.0
    with pytest.raises(InvalidInput):
        NewExtremeDetector(tolerance=-1.0)


def test_new_extreme_of_a_short_mean_sees_a_level_that_noise_hides() -> None:
    series = [10.0, 0.0, 10.0, 0.0, 10.0, 0.0, 4.0, 4.0, 1.0, 1.0]
    # means of two: 10, 5, 5, 5, 5, 5 (range [5, 10]), then 2: a new low, although 4 is inside [0, 10]
    det = NewExtremeDetector(tolerance=0.0, rest=0, short=2, min_count=4)
    raw = NewExtremeDetector(tolerance=0.0, rest=0, min_count=4)
    out = [score_and_update(det, i, x) for i, x in enumerate(series)]
    assert out == [0.0] * 6 + [1.0, 0.0, 0.0, 1.0]  # then 4 and 2.5 inside [2, 10], 1 below it
    assert [score_and_update(raw, i, x) for i, x in enumerate(series)] == [0.0] * 10
    twin = detector_from_state(json.loads(json.dumps(det.state())))
    assert twin.score(10, 0.0) == det.score(10, 0.0) == 1.0  # the mean (1 + 0) / 2 = 0.5 < 1


def test_ensemble_weights_put_a_member_below_another() -> None:
    ens = Ensemble([NewExtremeDetector(min_count=3, rest=0), WindowedGaussianDetector(window=20, min_count=3)],
                   calibrate=False, weights=[1.0, 0.5])
    out = [score_and_update(ens, i, float(i % 3)) for i in range(10)]
    assert max(out) <= 0.5  # the windowed Gaussian's part is halved; no new extreme yet
    assert score_and_update(ens, 10, 50.0) == 1.0
    with pytest.raises(InvalidInput):
        Ensemble([NewExtremeDetector()], weights=[1.5])
    twin = detector_from_state(json.loads(json.dumps(ens.state())))
    assert twin.score(11, 1.0) == ens.score(11, 1.0)


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="unknown detector kind"):
        detector_from_state({"kind": "nope"})
    state = json.loads(json.dumps(SeasonalMedianDetector().state()))
    state["slots"] = state["slots"][:3]
    with pytest.raises(InvalidInput):
        detector_from_state(state)

"""The conformance suite every anomaly detector passes (river's ``check_estimator``, our way).

``check_detector(make, n_features)`` builds fresh detectors with ``make()`` and checks, raising
``AssertionError`` with the name of the broken promise:

* it is a ``Detector`` and its ``kind`` is registered (``detector_from_state`` rebuilds it);
* ``score`` does not learn: scoring twice gives the same value and leaves ``state()`` unchanged;
* over a seeded normal stream (a daily cycle plus noise, every 5 minutes) every score is finite and
  in [0, 1], and after it a gross outlier scores above the median normal score;
* ``state()`` survives JSON, and the rebuilt detector scores the next observations exactly as the
  original (both keep streaming);
* ``learn_threshold`` returns a threshold in [0, 1] that ``is_anomaly`` then uses, and refuses an
  empty normal period with ``InvalidInput``;
* a NaN observation gets a score in [0, 1] instead of an exception, and a vector of the wrong
  length is refused with ``InvalidInput``.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Callable

from shopfloor.domain.analytics.detector import Detector, Observation, detector_from_state, score_and_update
from shopfloor.domain.errors import InvalidInput

STEP_US = 300 * 1_000_000
START_US = 1_700_000_000 * 1_000_000


def normal_stream(n_features: int, rows: int, seed: int = 7) -> list[tuple[int, Observation]]:
    """A daily cycle with correlated sensors and a little noise, every five minutes."""
    rng = random.Random(seed)
    out: list[tuple[int, Observation]] = []
    for i in range(rows):
        ts = START_US + i * STEP_US
        phase = 2 * math.pi * (i * 300 % 86_400) / 86_400
        base = 10.0 + 3.0 * math.sin(phase)
        vec = [base * (1 + 0.2 * k) + rng.gauss(0.0, 0.3) for k in range(n_features)]
        out.append((ts, vec[0] if n_features == 1 else vec))
    return out


def outlier(n_features: int) -> Observation:
    return 500.0 if n_features == 1 else [500.0 if k % 2 == 0 else -500.0 for k in range(n_features)]


def check_detector(make: Callable[[], Detector], n_features: int, rows: int = 1200) -> None:
    stream = normal_stream(n_features, rows)
    det = make()
    assert isinstance(det, Detector), "implements the Detector protocol"

    scores = [score_and_update(det, ts, x) for ts, x in stream]
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores), "scores are finite and in [0, 1]"

    ts_next = stream[-1][0] + STEP_US
    before = json.dumps(det.state(), sort_keys=True)
    first, second = det.score(ts_next, outlier(n_features)), det.score(ts_next, outlier(n_features))
    assert first == second, "score is repeatable"
    assert json.dumps(det.state(), sort_keys=True) == before, "score does not change the state"
    normal_median = statistics.median(scores[len(scores) // 2:])
    assert first > normal_median, f"an outlier ({first:.3f}) scores above normal data ({normal_median:.3f})"

    nan: Observation = math.nan if n_features == 1 else [math.nan] * n_features
    s_nan = det.score(ts_next, nan)
    assert 0.0 <= s_nan <= 1.0, "a NaN observation gets a score in [0, 1]"
    if n_features > 1:
        try:
            det.score(ts_next, [1.0] * (n_features + 1))
        except InvalidInput:
            pass
        else:
            raise AssertionError("a vector of the wrong length is refused with InvalidInput")

    state = json.loads(json.dumps(det.state()))
    assert state.get("kind") == det.kind, "state names its kind"
    twin = detector_from_state(state)
    assert type(twin) is type(det), "detector_from_state rebuilds the same class"
    more = normal_stream(n_features, 60, seed=11)
    for i, (_, x) in enumerate(more):
        ts = ts_next + i * STEP_US
        a, b = score_and_update(det, ts, x), score_and_update(twin, ts, x)
        assert a == b, f"a rebuilt detector scores as the original ({a} != {b} at step {i})"

    t = det.learn_threshold(scores[len(scores) // 2:])
    assert 0.0 <= t <= 1.0 and det.threshold == t, "learn_threshold sets a threshold in [0, 1]"
    assert det.is_anomaly(t) and (t == 0.0 or not det.is_anomaly(t * 0.999 - 1e-12)), "is_anomaly uses it"
    try:
        make().learn_threshold([])
    except InvalidInput:
        pass
    else:
        raise AssertionError("learn_threshold refuses an empty normal period with InvalidInput")

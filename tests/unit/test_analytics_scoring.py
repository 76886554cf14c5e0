"""NAB and SKAB scoring against hand-computed cases, and both benchmarks on a small slice."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shopfloor.domain.analytics.nab_score import NabFile, nab_score, probation_rows, scaled_sigmoid, sweep_rows
from shopfloor.domain.analytics.skab_metrics import binary_metrics
from shopfloor.domain.errors import InvalidInput
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"


def test_probation_is_fifteen_percent_capped_at_750_rows() -> None:
    assert probation_rows(100) == 15
    assert probation_rows(4032) == 604
    assert probation_rows(18050) == 750


def test_nab_window_with_an_early_and_a_late_detection_and_a_false_positive_outside() -> None:
    # 100 rows, probation 15, one window over rows 40..59 (width 20); detections at 45 (early),
    # 55 (late, worth less and ignored: only the earliest counts) and 80 (a false positive).
    scores = [0.0] * 100
    for i in (45, 55, 80):
        scores[i] = 1.0
    # by hand: position of row 45 is -(59 - 45 + 1) / 20 = -0.75; NAB's scaled sigmoid
    # 2 / (1 + e^(5 * -0.75)) - 1 = 0.954045, divided by its value at -1 (0.986614) = 0.966989.
    # row 80 lies (80 - 59) / (20 - 1) = 1.105263 window-widths past the window:
    # 2 / (1 + e^(5 * 1.105263)) - 1 = -0.992070, times the FP weight 0.11 = -0.109128.
    assert scaled_sigmoid(-0.75) == pytest.approx(0.954045, abs=1e-6)
    assert scaled_sigmoid(-1.0) == pytest.approx(0.986614, abs=1e-6)
    assert scaled_sigmoid(21 / 19) == pytest.approx(-0.992070, abs=1e-6)
    expected = 0.966989 - 0.109128
    result = nab_score([NabFile("f.csv", scores, [(40, 59)])])
    assert result.threshold == 1.0
    assert result.raw == pytest.approx(expected, abs=1e-5)
    assert (result.null, result.perfect) == (-1.0, 1.0)
    assert result.normalized == pytest.approx(100 * (expected + 1) / 2, abs=1e-3)
    (f,) = result.files
    assert (f.windows, f.detected, f.false_positives) == (1, 1, 1)
    # the late detection alone earns less, and a false positive before any window costs the full 0.11
    late_only = [0.0] * 100
    late_only[55] = 1.0
    late_only[20] = 1.0
    late = nab_score([NabFile("f.csv", late_only, [(40, 59)])])
    by_hand = (2 / (1 + math.exp(5 * -(59 - 55 + 1) / 20)) - 1) / 0.986614 - 0.11
    assert late.raw == pytest.approx(by_hand, abs=1e-5)


def test_nab_ignores_probation_and_picks_one_threshold_for_the_corpus() -> None:
    rows = sweep_rows(100, [(40, 59)])
    assert len(rows) == 85 and rows[0].window is None
    a = [0.0] * 100
    a[40] = 0.9  # the perfect detection in file a
    a[5] = 1.0  # inside probation: ignored
    b = [0.0] * 100
    b[70] = 0.9  # a false positive in file b, whose window it misses
    result = nab_score([NabFile("a", a, [(40, 59)]), NabFile("b", b, [(20, 30)])])
    assert result.threshold == 0.9
    assert [f.detected for f in result.files] == [1, 0]
    assert result.raw == pytest.approx(1.0 - 1.0 + 0.11 * scaled_sigmoid(39 / 10))
    with pytest.raises(InvalidInput):
        nab_score([NabFile("bad", [0.0] * 10, [(5, 20)])])


def test_skab_metrics_on_a_tiny_confusion_matrix() -> None:
    m = binary_metrics([1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 1, 0])
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 1, 2, 1)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.far == pytest.approx(1 / 3)  # FP / (FP + TN)
    assert m.mar == pytest.approx(1 / 3)  # FN / (FN + TP)
    assert binary_metrics([0, 0], [0, 0]).f1 == 0.0
    with pytest.raises(InvalidInput):
        binary_metrics([1], [1, 0])


def _bench(*args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "anomaly.py"), *args, "--no-docs"],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_nab_benchmark_on_a_slice() -> None:
    need((DATA / "nab" / "windows.json").exists(), f"the NAB data in {DATA / 'nab'}")
    last = _bench("--nab", str(DATA / "nab"), "--files", "2")
    m = re.fullmatch(r"NAB score: (-?\d+\.\d)", last)
    assert m, last
    assert -100.0 <= float(m.group(1)) <= 100.0


def test_skab_benchmark_on_a_slice() -> None:
    need((DATA / "skab" / "valve1").is_dir(), f"the SKAB data in {DATA / 'skab' / 'valve1'}")
    last = _bench("--skab", str(DATA / "skab" / "valve1"), "--files", "3")
    m = re.fullmatch(r"SKAB F1: (\d\.\d{3}) FAR: (\d+\.\d) MAR: (\d+\.\d)", last)
    assert m, last
    assert 0.0 < float(m.group(1)) <= 1.0  # the detector finds something on three real files


def test_bench_refuses_a_missing_folder_clearly(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "anomaly.py"), "--nab", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "does not exist" in proc.stderr

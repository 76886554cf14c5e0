"""RUL: scoring functions against hand-computed cases, window features, the model on a C-MAPSS slice."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shopfloor.domain.analytics.rul import RulConfig, RulModel, feature_names, features, targets
from shopfloor.domain.analytics.rul_metrics import phm08_score, phm08_term, rmse
from shopfloor.domain.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]
CMAPSS = ROOT.parent / "shared" / "data" / "cmapss"
TRAIN = CMAPSS / "train_FD001.txt"


def test_rmse_by_hand() -> None:
    # errors +3 and -4: sqrt((9 + 16) / 2)
    assert rmse([10.0, 20.0], [13.0, 16.0]) == pytest.approx(math.sqrt(12.5))
    assert rmse([5.0], [5.0]) == 0.0


def test_phm08_late_costs_more_than_early() -> None:
    # 13 cycles early: e^1 - 1; 10 cycles late: e^1 - 1; exact hit: 0
    assert phm08_term(20.0, 7.0) == pytest.approx(math.e - 1)
    assert phm08_term(20.0, 30.0) == pytest.approx(math.e - 1)
    assert phm08_term(20.0, 20.0) == 0.0
    assert phm08_term(50.0, 60.0) > phm08_term(50.0, 40.0)
    assert phm08_score([20.0, 20.0, 20.0], [7.0, 30.0, 20.0]) == pytest.approx(2 * (math.e - 1))


def test_scoring_refuses_mismatched_or_empty_input() -> None:
    with pytest.raises(InvalidInput):
        rmse([1.0, 2.0], [1.0])
    with pytest.raises(InvalidInput):
        phm08_score([], [])


def test_features_by_hand() -> None:
    cfg = RulConfig(window=3, short_window=2, baseline=2)
    # one signal rising by 1 per cycle, one constant
    hist = np.array([[10.0, 5.0], [11.0, 5.0], [12.0, 5.0], [13.0, 5.0], [14.0, 5.0]])
    f = features(hist, cfg)
    names = feature_names(["a", "b"])
    assert f.shape == (5, len(names))
    col = {n: f[:, i] for i, n in enumerate(names)}
    # values are relative to the first cycle (10 for a)
    assert col["a__short_mean"].tolist() == pytest.approx([0.0, 0.5, 1.5, 2.5, 3.5])
    assert col["a__mean"].tolist() == pytest.approx([0.0, 0.5, 1.0, 2.0, 3.0])
    assert col["a__slope"].tolist() == pytest.approx([0.0, 1.0, 1.0, 1.0, 1.0])
    assert col["a__std"][-1] == pytest.approx(math.sqrt(2 / 3))
    # baseline = mean of the first 2 cycles (0.5) once two are seen
    assert col["a__drift"].tolist() == pytest.approx([0.0, 0.0, 1.0, 2.0, 3.0])
    assert col["b__slope"].tolist() == [0.0] * 5
    assert col["cycles"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_targets_are_capped_remaining_cycles() -> None:
    assert targets(5, 3.0).tolist() == [3.0, 3.0, 2.0, 1.0, 0.0]


def test_bad_histories_and_settings_are_refused() -> None:
    with pytest.raises(InvalidInput):
        features(np.array([[1.0, float("nan")]]), RulConfig())
    with pytest.raises(InvalidInput):
        features(np.zeros((0, 2)), RulConfig())
    with pytest.raises(InvalidInput):
        RulConfig(window=1)
    with pytest.raises(InvalidInput, match="unknown RUL setting"):
        RulConfig.from_dict({"windw": 3})
    with pytest.raises(InvalidInput, match="whole number"):
        RulConfig.from_dict({"window": 3.5})
    with pytest.raises(InvalidInput, match="not a serialised RUL model"):
        RulModel.from_bytes(b"\x00junk")


def synthetic_lives(n: int, seed: int = 1) -> list[np.ndarray]:
    """Two signals that drift up faster toward the end of each life, plus noise."""
    rng = np.random.default_rng(seed)
    lives = []
    for _ in range(n):
        length = int(rng.integers(120, 220))
        frac = np.arange(length) / length
        wear = np.exp(4 * frac) / math.e**4
        a = 100 + 5 * wear + rng.normal(0, 0.2, length)
        b = 50 - 3 * wear + rng.normal(0, 0.2, length)
        lives.append(np.column_stack([a, b]))
    return lives


def test_model_learns_synthetic_wear_and_round_trips() -> None:
    cfg = RulConfig(rounds=100)
    model = RulModel.fit(synthetic_lives(20), ["a", "b"], cfg)
    test_life = synthetic_lives(1, seed=99)[0]
    pred = model.predict(test_life)
    assert pred.shape == (len(test_life),)
    assert (pred >= 0).all()
    # near failure the model sees it coming; early on it says "healthy" (near the cap)
    assert pred[-1] < 30
    assert pred[10] > 90
    blob = model.to_bytes()
    again = RulModel.from_bytes(blob)
    assert again.signals == ("a", "b") and again.config == cfg
    np.testing.assert_allclose(again.predict(test_life), pred)
    with pytest.raises(InvalidInput, match="expects 2 signal"):
        model.predict(np.ones((5, 3)))


def test_model_on_a_cmapss_slice() -> None:
    if not TRAIN.exists():
        pytest.skip(f"{TRAIN} is not here (see ../shared/data/README.md)")
    rows = np.loadtxt(TRAIN)
    lives = {u: rows[rows[:, 0] == u][:, 5:26] for u in range(1, 26)}
    signals = [f"s{i}" for i in range(1, 22)]
    model = RulModel.fit([lives[u] for u in range(1, 21)], signals, RulConfig(rounds=150))
    truth, predicted = [], []
    for u in range(21, 26):
        life = lives[u]
        for true_rul in (10, 60):
            truth.append(float(true_rul))
            predicted.append(model.predict_last(life[: len(life) - true_rul]))
    # a model that learned nothing predicts about the mean target (~90) everywhere: RMSE > 40
    assert rmse(truth, predicted) < 30


def test_bench_on_a_slice(tmp_path: Path) -> None:
    if not TRAIN.exists():
        pytest.skip(f"{TRAIN} is not here (see ../shared/data/README.md)")
    docs = tmp_path / "ANALYTICS.md"
    docs.write_text("# Analytics\n\n## NAB\n\nother section\n\n## SKAB\n\nanother\n")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "rul.py"), "--cmapss", str(CMAPSS), "--units", "20",
                          "--folds", "2", "--docs", str(docs)], capture_output=True, text=True, timeout=600, check=True)
    last = out.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"RUL RMSE: (\d+\.\d+) PHM08: (\d+\.\d+)", last)
    assert m, last
    assert 0 < float(m.group(1)) < 60
    text = docs.read_text()
    assert "## NAB\n\nother section\n\n## SKAB\n\nanother\n\n## RUL" in text  # the others are left alone
    assert "<!-- rul:begin -->" in text and "## RUL (C-MAPSS FD001)" in text and m.group(1) in text
    # a second run replaces the section rather than adding one
    subprocess.run([sys.executable, str(ROOT / "bench" / "rul.py"), "--cmapss", str(CMAPSS), "--units", "20",
                    "--folds", "2", "--docs", str(docs)], capture_output=True, text=True, timeout=600, check=True)
    again = docs.read_text()
    assert again.count("<!-- rul:begin -->") == 1 and again.count("## RUL") == 1 and "another" in again

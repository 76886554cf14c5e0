"""Remaining useful life on NASA C-MAPSS FD001: RMSE and the PHM08 score.

Run with the project's interpreter::

    .venv/bin/python bench/rul.py --cmapss ../shared/data/cmapss [--folds 5] [--units N] [--no-docs]

Trains ``shopfloor.domain.analytics.rul.RulModel`` (its default configuration, the same for every
run) on ``train_FD001.txt`` with the target capped at 125 cycles. Where DIR also holds the official
``test_FD001.txt`` and ``RUL_FD001.txt``, the model trained on all training engines is scored on
those: the prediction after each test engine's last cycle against the true RUL. Otherwise the
engines are split by unit into ``--folds`` folds; for each fold a model is trained on the other
folds and each held-out engine is truncated at a random cycle (seeded) so that its true RUL is at
most 150 (and at least 31 cycles stay observed, as in the official test set); the prediction after
the last kept cycle is scored against the true, uncapped RUL. Nothing in the scored part tunes
anything. Results go to the "RUL (C-MAPSS FD001)" section of docs/ANALYTICS.md (its body between
``<!-- rul:begin -->`` and ``<!-- rul:end -->``; the rest of the file is left as it is). The last
line printed is ``RUL RMSE: X PHM08: Y``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shopfloor.domain.analytics.rul import RulConfig, RulModel
from shopfloor.domain.analytics.rul_metrics import phm08_score, rmse

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "ANALYTICS.md"
SIGNALS = tuple(f"s{i}" for i in range(1, 22))  # the 21 sensors; the 3 operating settings are left out
MAX_TRUE_RUL = 150
MIN_OBSERVED = 31
TITLE = "RUL (C-MAPSS FD001)"
BEGIN, END = "<!-- rul:begin -->", "<!-- rul:end -->"


def load(path: Path) -> dict[int, np.ndarray]:
    """C-MAPSS rows (unit, cycle, 3 settings, 21 sensors) -> per unit the sensor rows by cycle."""
    rows = np.loadtxt(path, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] < 26:
        raise SystemExit(f"{path}: expected 26 space-separated columns per row")
    units: dict[int, np.ndarray] = {}
    for unit in np.unique(rows[:, 0]).astype(int):
        part = rows[rows[:, 0] == unit]
        part = part[np.argsort(part[:, 1])]
        units[int(unit)] = part[:, 5:26]
    return units


def official(train: dict[int, np.ndarray], directory: Path, config: RulConfig) -> tuple[list[float], list[float], float, str]:
    test = load(directory / "test_FD001.txt")
    truth = [float(v) for v in np.loadtxt(directory / "RUL_FD001.txt", dtype=np.float64).ravel()]
    if len(truth) != len(test):
        raise SystemExit(f"RUL_FD001.txt has {len(truth)} values for {len(test)} test engines")
    t0 = time.perf_counter()
    model = RulModel.fit(list(train.values()), SIGNALS, config)
    train_s = time.perf_counter() - t0
    predicted = [model.predict_last(test[u]) for u in sorted(test)]
    return truth, predicted, train_s, f"official test set ({len(test)} engines)"


def held_out(train: dict[int, np.ndarray], folds: int, config: RulConfig,
             seed: int) -> tuple[list[float], list[float], float, str]:
    units = sorted(train)
    rng = random.Random(seed)
    order = units[:]
    rng.shuffle(order)
    truth: list[float] = []
    predicted: list[float] = []
    train_s = 0.0
    for k in range(folds):
        test_units = set(order[k::folds])
        t0 = time.perf_counter()
        model = RulModel.fit([train[u] for u in units if u not in test_units], SIGNALS, config)
        train_s = max(train_s, time.perf_counter() - t0)
        for u in sorted(test_units):
            life = train[u]
            n = len(life)
            # keep rows [0, cut): true RUL after the last kept row is n - cut
            lo_rul = 1
            hi_rul = min(MAX_TRUE_RUL, n - MIN_OBSERVED)
            if hi_rul < lo_rul:
                continue
            true_rul = rng.randint(lo_rul, hi_rul)
            cut = n - true_rul
            truth.append(float(true_rul))
            predicted.append(model.predict_last(life[:cut]))
    return truth, predicted, train_s, f"{folds}-fold held-out engines ({len(truth)} truncated, true RUL 1-{MAX_TRUE_RUL})"


def update_docs(text: str, docs: Path = DOCS) -> None:
    """Replace (or append) the ``## {TITLE}`` section (up to the next ``## `` heading), leaving the
    rest alone, as bench/anomaly.py does with its sections; the body sits between the rul markers."""
    body = docs.read_text() if docs.exists() else "# Analytics benchmarks\n\nEach benchmark rewrites only its own section.\n"
    section = f"## {TITLE}\n\n{BEGIN}\n{text.strip()}\n{END}\n\n"
    pattern = re.compile(rf"^## {re.escape(TITLE)}\n.*?(?=^## |\Z)", re.M | re.S)
    body = pattern.sub(lambda _m: section, body) if pattern.search(body) else body.rstrip("\n") + "\n\n" + section
    docs.write_text(body.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cmapss", type=Path, required=True, help="folder holding train_FD001.txt (and optionally test_FD001.txt, RUL_FD001.txt)")
    parser.add_argument("--folds", type=int, default=5, help="folds for held-out scoring without the official test files")
    parser.add_argument("--units", type=int, default=0, help="use only the first N training engines (a quick slice)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the fold split and truncation points")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/ANALYTICS.md alone")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the Markdown file whose RUL section is rewritten")
    args = parser.parse_args()
    started = time.perf_counter()
    train = load(args.cmapss / "train_FD001.txt")
    if args.units:
        train = {u: train[u] for u in sorted(train)[: args.units]}
    config = RulConfig()
    if (args.cmapss / "test_FD001.txt").exists() and (args.cmapss / "RUL_FD001.txt").exists():
        truth, predicted, train_s, how = official(train, args.cmapss, config)
    else:
        truth, predicted, train_s, how = held_out(train, args.folds, config, args.seed)
    score_rmse = rmse(truth, predicted)
    score_phm = phm08_score(truth, predicted)
    total_s = time.perf_counter() - started
    print(f"evaluated on: {how}; training engines: {len(train)}")
    print(f"longest single training: {train_s:.1f} s; whole run: {total_s:.1f} s")
    if not args.no_docs:
        machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        update_docs("\n".join([
            f"Written by `bench/rul.py` on {datetime.now(UTC).date().isoformat()} ({machine}).",
            "",
            "Model: LightGBM on window features (`shopfloor.domain.analytics.rul`, default `RulConfig`: "
            f"window {config.window}, short window {config.short_window}, baseline {config.baseline}, "
            f"{config.rounds} rounds), all 21 sensors, target capped at {config.cap:g}.",
            "",
            "| evaluated on | engines | RMSE | PHM08 | longest training | whole run | load average |",
            "|---|---|---|---|---|---|---|",
            f"| {how} | {len(train)} | {score_rmse:.2f} | {score_phm:.1f} | {train_s:.1f} s | {total_s:.1f} s "
            f"| {os.getloadavg()[0]:.1f} |",
            "",
            "Held out: each fold's model trains on the other folds' engines only (k-fold by unit). "
            "The training time is the longest single model fit; the machine is shared, so compare "
            "times only within one run.",
            "",
            "Published on the official FD001 test set: CNN 18.4, LSTM 16.1 RMSE; a linear model 30-40.",
        ]), args.docs)
    print(f"RUL RMSE: {score_rmse:.2f} PHM08: {score_phm:.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

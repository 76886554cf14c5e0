"""The worked examples of docs/analytics.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_analytics_example_runs(index: int) -> None:
    exec(compile(BLOCKS[index], f"docs/analytics.md block {index}", "exec"), {})

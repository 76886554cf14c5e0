"""docs/PERFORMANCE.md in sections: each bench rewrites only its own."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, title: str, section: str) -> None:
    """Replace the ``## title`` section of the file (or append it), leaving the other sections alone."""
    text = path.read_text() if path.exists() else "# Performance\n"
    marker = f"\n## {title}\n"
    if marker in text:
        head, _, rest = text.partition(marker)
        nxt = rest.find("\n## ")
        after = rest[nxt + 1:] if nxt >= 0 else ""
    else:
        head, after = text, ""
    path.write_text(head.rstrip("\n") + "\n\n" + section + ("\n" + after if after else ""))

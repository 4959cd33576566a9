"""Each file in tests/broken/ breaks one rule; ``# expect: CODE`` marks the line the
diagnostic must point at (``# expect: CODE @LINE`` when it cannot sit on that line).
The diagnostics must be exactly the expected ones: a right code, at the right line, each
once (a marker written twice expects two), and no follow-on noise."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from flowengine.graph import validate_file

from .conftest import BROKEN

EXPECT = re.compile(r"#\s*expect:\s*([a-z0-9-]+)(?:\s*@(\d+))?")
CORPUS = sorted(BROKEN.glob("*.yaml"))


def expected(path: Path) -> Counter[tuple[str, int]]:
    found: Counter[tuple[str, int]] = Counter()
    # Some files are broken on purpose at the byte level (Latin-1, NUL bytes).
    text = path.read_bytes().decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        for code, at in EXPECT.findall(line):
            found[(code, int(at) if at else number)] += 1
    return found


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 40


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    # Generated rather than kept in the repository: 26 MiB of valid-looking YAML.
    huge = tmp_path / "huge.yaml"
    with huge.open("w", encoding="utf-8") as handle:
        handle.write("name: Huge\nsteps:\n")
        step = "  s{}:\n    type: process\n    instruction: " + "x" * 200 + "\n"
        for index in range(26 * 1024 * 1024 // len(step) + 1):
            handle.write(step.format(index))
    result = validate_file(str(huge))
    assert [(d.code, d.line, d.column) for d in result.diagnostics] == [("file-too-large", 1, 1)]
    assert "MiB" in result.diagnostics[0].message


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_broken_file_gives_exactly_the_expected_diagnostics(path: Path) -> None:
    want = expected(path)
    result = validate_file(str(path))
    got = Counter((d.code, d.line) for d in result.diagnostics)
    assert got == want, "\n".join(d.format() for d in result.diagnostics)
    for diagnostic in result.diagnostics:
        assert diagnostic.file == str(path)
        assert diagnostic.line >= 1 and diagnostic.column >= 1
        assert diagnostic.message and "Traceback" not in diagnostic.message

"""``flowengine test --compare A B``: the same cases on two sides, each a backend, a
model file, another version of the agent (a file) or a git revision of it; per case
pass/fail, tokens, seconds and the output's diff, and the pass rate of each side."""

from __future__ import annotations

import difflib
import json
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flowengine.errors import UsageError
from flowengine.testing.spec import TestFile


@dataclass(frozen=True)
class Side:
    """One side of a comparison: what it changes, and how it is shown."""

    label: str
    backend: str | None = None
    model: str | None = None
    agent_file: Path | None = None
    revision: str | None = None


def parse_side(text: str, backends: list[str]) -> Side:
    """A backend name, a model file (``.gguf``), an agent file, or a git revision."""
    path = Path(text)
    if text in backends:
        return Side(text, backend=text)
    if path.is_file() and path.suffix == ".gguf":
        return Side(path.name, model=text)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return Side(text, agent_file=path)
    if _git("rev-parse", "--verify", "--quiet", f"{text}^{{commit}}", cwd=Path.cwd()) is not None:
        return Side(text, revision=text)
    raise UsageError(
        f"--compare {text}: not a backend ({', '.join(backends)}), a .gguf model file, an "
        "agent file or a git revision"
    )


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        return done.stdout.decode("utf-8")
    except UnicodeDecodeError:
        return None  # not a text file at that revision: said as "git has no ..."


def with_agent(test: TestFile, side: Side) -> TestFile:
    """The test file with its agent as ``side`` has it (the same, another file, or the
    file at a git revision)."""
    from flowengine.graph.validate import validate_text

    if side.agent_file is not None:
        from flowengine.agentfile.yamlsource import YamlLoadError, read_text

        try:
            source = read_text(str(side.agent_file))
        except YamlLoadError as exc:
            raise UsageError(f"--compare {side.agent_file}: {exc}") from None
        name = str(side.agent_file)
    elif side.revision is not None:
        folder = test.agent_path.parent
        top = _git("rev-parse", "--show-toplevel", cwd=folder)
        if top is None:
            raise UsageError(f"--compare {side.revision}: {folder} is not in a git checkout")
        try:
            relative = test.agent_path.resolve().relative_to(Path(top.strip()).resolve())
        except ValueError:
            raise UsageError(
                f"--compare {side.revision}: {test.agent_path} is outside the git checkout "
                f"at {top.strip()}"
            ) from None
        shown = _git("show", f"{side.revision}:{relative.as_posix()}", cwd=folder)
        if shown is None:
            raise UsageError(f"--compare {side.revision}: git has no {relative} at that revision")
        source, name = shown, f"{side.revision}:{relative.as_posix()}"
    else:
        return test
    validated = validate_text(source, name)
    if validated.errors or validated.agent is None:
        first = validated.errors[0].format() if validated.errors else "it does not load"
        raise UsageError(f"--compare {side.label}: the agent has errors; first: {first}")
    return replace(test, agent=validated.agent, agent_source=source)


def output_diff(a: Any, b: Any, width: int = 12) -> list[str]:
    """The outputs' differences as unified-diff lines (none when they are equal)."""

    def lines(value: Any) -> list[str]:
        text = value if isinstance(value, str) else json.dumps(value, indent=1, default=str)
        return text.splitlines()

    if a == b:
        return []
    diff = list(difflib.unified_diff(lines(a), lines(b), "A", "B", lineterm="", n=1))
    return diff[: width + 2] + (["  …"] if len(diff) > width + 2 else [])

"""The README's promises: its example agent validates, and every code is documented."""

from __future__ import annotations

import re
import textwrap

from flowengine.agentfile.diagnostics import CODES
from flowengine.errors import RUN_CODES
from flowengine.graph import validate_text

from .conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_agents() -> list[str]:
    """The README's YAML blocks that are whole agents, unindented."""
    blocks = re.findall(r"^( *)```yaml\n(.*?)^ *```", README, re.S | re.M)
    return [
        textwrap.dedent(block) for indent, block in blocks if "steps:" in block and "name:" in block
    ]


def test_the_example_agent_in_the_readme_is_valid() -> None:
    example, ideas = readme_agents()
    assert not validate_text(ideas, "README.md").diagnostics
    result = validate_text(example, "README.md")
    assert result.diagnostics == [], [d.format() for d in result.diagnostics]
    kinds = {step.type for step in result.agent.steps.values()}
    assert kinds == {"process", "decision", "terminal"}


def test_every_diagnostic_code_is_documented() -> None:
    for code in CODES:
        assert f"`{code}`" in README, code


def test_every_run_time_error_code_is_documented() -> None:
    for code in RUN_CODES:
        assert f"| `{code}` |" in README, code


def test_readme_names_the_two_commands_that_ci_runs() -> None:
    assert "make demo" in README and "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_registered_code_is_used_by_the_code() -> None:
    sources = "".join(
        p.read_text() for p in (ROOT / "flowengine").rglob("*.py") if p.name != "diagnostics.py"
    )
    for code in CODES:
        used = f'"{code}"' in sources or (
            code.endswith("-syntax") and 'f"{kind}-syntax"' in sources
        )
        assert used, code


def test_run_time_codes_are_used_and_the_readme_table_lists_only_them() -> None:
    """Both directions, as for the validation codes: every registered run-time code is
    raised or stored somewhere, and the README's table of them names no other."""
    sources = "".join(
        p.read_text() for p in (ROOT / "flowengine").rglob("*.py") if p.name != "errors.py"
    )
    for code in RUN_CODES:
        assert f'"{code}"' in sources, code
    table = README.split("these stable codes", 1)[1].split("\n\n", 2)[1]
    listed = re.findall(r"^\| `([a-z-]+)` \|", table, re.M)
    assert listed and set(listed) == set(RUN_CODES), set(listed) ^ set(RUN_CODES)

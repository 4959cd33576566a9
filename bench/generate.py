"""Generated agent files of any size, for the validation benchmarks.

The flow mixes what real agents contain: process steps that save variables and use
earlier ones in templates, LLM decisions every tenth step with a guarded back edge,
a ``when:`` decision, a tool call, and one terminal step at the end.
"""

from __future__ import annotations


def generated_agent(steps: int) -> str:
    """YAML text of a valid agent with ``steps`` steps (at least 3)."""
    steps = max(steps, 3)
    lines = [
        "# yaml-language-server: $schema=../schemas/agent.schema.json",
        f"name: Generated{steps}",
        "description: A generated agent for benchmarks.",
        "tools: [calculator]",
        "inputs:",
        "  budget: {description: How much to spend., default: 100}",
        f"max_steps: {steps * 2}",
        "steps:",
    ]
    for i in range(steps - 1):
        here, after = f"s{i}", f"s{i + 1}"
        if i % 10 == 9:
            lines += [
                f"  {here}:",
                "    type: decision",
                f"    question: Is {{{{ v{i - 1 if (i - 1) % 50 != 25 else i - 2} }}}} good?",
                f"    branches: {{yes: {after}, no: s{i - 5}}}",
                "    max_visits: 3",
            ]
        elif i % 50 == 25:
            lines += [
                f"  {here}:",
                "    type: decision",
                "    question: Over budget?",
                "    when: {over: 'budget < 10'}",
                "    default: fine",
                f"    branches: {{over: {after}, fine: {after}}}",
            ]
        elif i % 50 == 30:
            lines += [
                f"  {here}:",
                "    type: process",
                "    tool: calculator",
                f"    args: {{expression: '{{{{ budget }}}} * {i}'}}",
                f"    save_as: v{i}",
                f"    next: {after}",
            ]
        else:
            saved_before = i > 0 and (i - 1) % 10 != 9 and (i - 1) % 50 != 25
            previous = f" using {{{{ v{i - 1} }}}}" if saved_before else ""
            lines += [
                f"  {here}:",
                "    type: process",
                f"    instruction: Work on part {i} of {{{{ task }}}}{previous}.",
                f"    save_as: v{i}",
                f"    next: {after}",
            ]
    lines += [f"  s{steps - 1}:", "    type: terminal", "    output: Done after {{ last }}."]
    return "\n".join(lines) + "\n"

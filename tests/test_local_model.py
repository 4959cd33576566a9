"""The real model through ctransformers: TravelAgent end to end, concurrent runs under
round-robin, greedy outputs equal under both schedulers, a run killed mid-way resumed,
and a run that waits at an input step resumed with the answer.
These are the slow tests (minutes, on two cores)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from flowengine.kernel.backends.base import Message
from flowengine.kernel.backends.ctransformers import CTransformersBackend
from flowengine.kernel.kernel import Kernel
from flowengine.kernel.llm_request import LLMRequest
from flowengine.kernel.scheduler import SchedulerConfig
from flowengine.storage.writer import connect
from tests.conftest import AGENTS, ROOT, flowengine_command, run_cli

TRIP = "Plan a 3-day trip from Seattle to California"
THREE = [str(AGENTS / f) for f in ("math_agent.yaml", "rec_agent.yaml", "narrative_agent.yaml")]


@pytest.fixture(scope="module")
def backend() -> CTransformersBackend:
    return CTransformersBackend()


def _stored(db: Path, sql: str) -> list[tuple]:
    # Through flowengine's own connect, as `logs` reads: after a kill it replays the
    # journal the dead process left (storage/journal.py), where acknowledged steps wait.
    with connect(db, read_only=True) as con:
        return con.execute(sql).fetchall()


def test_travel_agent_reaches_its_terminal_step(tmp_path: Path) -> None:
    db = tmp_path / "travel.duckdb"
    done = run_cli(
        "run",
        str(AGENTS / "travel_agent.yaml"),
        "--input",
        TRIP,
        "--db",
        str(db),
        "--max-tokens",
        "24",
        "--json",
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["status"] == "completed"
    assert outcome["path"][-1] == "Step 18" and len(outcome["path"]) <= 150
    assert outcome["output_valid"] is not None  # JSON checked against the schema
    # The rows match what happened.
    path = outcome["path"]
    assert [s for (s,) in _stored(db, "SELECT step_id FROM steps ORDER BY seq")] == path
    tool_steps = {
        "Step 1",
        "Step 4",
        "Step 5",
        "Step 6",
        "Step 9",
        "Step 10",
        "Step 11",
        "Step 12",
        "Step 14",
        "Step 15",
        "Step 16",
        "Step 19",
    }
    assert _stored(db, "SELECT count(*) FROM tool_calls") == [(sum(s in tool_steps for s in path),)]
    llm_decisions = {"Step 22", "Step 23"}
    when_decisions = {"Step 2", "Step 7", "Step 13", "Step 20"}
    assert _stored(db, "SELECT count(*) FROM llm_requests WHERE kind = 'choose'") == [
        (sum(s in llm_decisions for s in path),)
    ]
    # The plan (Step 18) is assembled from state, with no model call.
    assert _stored(db, "SELECT count(*) FROM llm_requests WHERE kind = 'generate'") == [
        (sum(s not in llm_decisions | when_decisions | {"Step 18"} for s in path),)
    ]
    flights = _stored(db, "SELECT result FROM tool_calls WHERE tool = 'search_flights'")
    assert flights and all("SAMPLE" in json.loads(r)["source"] for (r,) in flights)
    # The plan is what the steps found: valid against its schema, one entry a day numbered
    # 1..N, and each day's meals, attraction and hotel exactly what its steps picked
    # (constrained to their tool's results), with no restaurant twice in a day and none
    # again until the city has no other left.
    assert outcome["output_valid"] is True and outcome["output_errors"] == []
    assert _stored(db, "SELECT count(*) FROM errors WHERE code = 'output-invalid'") == [(0,)]
    days = outcome["output"]["days"]
    [(trip,)] = _stored(db, "SELECT result FROM tool_calls WHERE tool = 'plan_trip'")
    assert [day["day"] for day in days] == list(range(1, json.loads(trip)["days"] + 1))
    picks: dict[str, list[str]] = {}
    for step_id, result in _stored(db, "SELECT step_id, result FROM steps ORDER BY seq"):
        picks.setdefault(step_id, []).append(json.loads(result))
    for key, step_id in (("breakfast", "Step 9"), ("lunch", "Step 10"), ("dinner", "Step 11")):
        assert [day[key] for day in days] == picks[step_id]
    assert [day["attraction"] for day in days] == picks["Step 12"]
    assert [day["accommodation"] for day in days] == [*picks["Step 19"], "-"]
    meals = [day[key] for day in days for key in ("breakfast", "lunch", "dinner")]
    assert all(len({day["breakfast"], day["lunch"], day["dinner"]}) == 3 for day in days)
    per_city = 6  # restaurants a city has in the sample data
    assert len(set(meals[:per_city])) == min(per_city, len(meals))
    results = " ".join(r for (r,) in _stored(db, "SELECT result FROM tool_calls WHERE ok"))
    places = ("breakfast", "lunch", "dinner", "attraction", "accommodation")
    names = {day[k] for day in days for k in places} - {"-"}
    assert all(json.dumps(name) in results for name in names), names
    # Steps after the first found the start of their prompt in the run's KV cache.
    [(reused,)] = _stored(db, "SELECT sum(reused_tokens) FROM llm_requests")
    assert reused > 0


def test_the_readme_three_ideas_loop_collects_three_ideas(tmp_path: Path) -> None:
    """The README's worked example of state, as written there, on the real model: the
    append reducer keeps each idea, and the output is built from them with its types."""
    from tests.test_readme import readme_agents

    [ideas_yaml] = [text for text in readme_agents() if "name: Ideas" in text]
    agent = tmp_path / "ideas.yaml"
    agent.write_text(ideas_yaml)
    db = tmp_path / "ideas.duckdb"
    done = run_cli(
        "run", str(agent), "--input", "a birthday party", "--db", str(db),
        "--max-tokens", "24", "--json", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["status"] == "completed" and outcome["output_valid"] is True
    ideas = outcome["output"]["ideas"]
    assert outcome["output"]["count"] == 3 == len(ideas)
    # Each idea is what a 'think' step replied, in order: collected, not rewritten.
    replies = _stored(db, "SELECT result FROM steps WHERE step_id = 'think' ORDER BY seq")
    assert ideas == [json.loads(r) for (r,) in replies]
    assert all(isinstance(idea, str) and idea.strip() for idea in ideas)
    # Each step stored the list as it grew.
    states = _stored(db, "SELECT state->'set'->'ideas' FROM steps WHERE step_id = 'think'")
    assert [len(json.loads(s)) for (s,) in states] == [1, 2, 3]


def _runs(tmp_path: Path, agents: list[str], policy: str, pool: int) -> tuple[list[dict], Path]:
    db = tmp_path / f"{policy}-{len(agents)}-{pool}.duckdb"
    done = run_cli(
        "run",
        *agents,
        "--input",
        "I want cheap Italian restaurants in Boston, 3 of them",
        "--scheduler",
        policy,
        "--quantum",
        "4",
        "--pool",
        str(pool),
        "--max-tokens",
        "20",
        "--db",
        str(db),
        "--json",
        timeout=1200,
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout), db


def _what_happened(outcome: dict) -> tuple:
    return (outcome["agent"], outcome["status"], outcome["path"], outcome["output"])


def test_round_robin_interleaves_three_runs_and_matches_fifo(tmp_path: Path) -> None:
    """Each run keeps its KV cache between steps. With one cache for three runs under rr,
    caches are taken from runs between steps and from preempted requests, and rebuilt by
    replaying their evaluation logs; greedy output must not notice any of it: the same as
    under fifo with a cache each, and the same as a run alone."""
    rr, rr_db = _runs(tmp_path, THREE, "rr", pool=1)
    fifo, fifo_db = _runs(tmp_path, THREE, "fifo", pool=4)
    [alone], _ = _runs(tmp_path, THREE[:1], "fifo", pool=4)
    for a, b in zip(rr, fifo, strict=True):
        assert _what_happened(a) == _what_happened(b)
    assert _what_happened(alone) == _what_happened(fifo[0])
    assert _stored(rr_db, "SELECT sum(restores) > 0 FROM llm_requests") == [(True,)]
    # Later steps of a run found their beginning in the run's cache.
    for db in (rr_db, fifo_db):
        [(reused, prompt)] = _stored(
            db, "SELECT sum(reused_tokens), sum(prompt_tokens) FROM llm_requests"
        )
        assert 0 < reused < prompt
    order = [r for (r,) in _stored(rr_db, "SELECT run_id FROM llm_slices ORDER BY started_s")]
    switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
    assert len(set(order)) == 3 and switches >= 10
    assert _stored(rr_db, "SELECT sum(preemptions) > 0 FROM llm_requests") == [(True,)]
    assert _stored(fifo_db, "SELECT sum(preemptions) FROM llm_requests") == [(0,)]
    stats = run_cli("stats", "--db", str(rr_db), "--format", "json")
    assert {row["agent"] for row in json.loads(stats.stdout)["scheduler"]} == {
        "MathAgent",
        "RecAgent",
        "NarrativeAgent",
    }


def test_preempted_output_equals_uninterrupted_with_one_context(
    backend: CTransformersBackend,
) -> None:
    """Pool of one: every switch gives the cache away and rebuilds it from its log. The
    first request is constrained to a JSON Schema: its grammar state lives on the request,
    so preemption and restores leave its output valid and the same as under fifo."""
    asks = ["Name three fruits.", "What is the capital of France?", "Say hello in Spanish."]
    fruits = {
        "type": "array",
        "minItems": 3,
        "maxItems": 3,
        "items": {"enum": ["apple", "banana", "cherry", "grape", "mango"]},
    }

    def run(policy: str, pool: int) -> list[LLMRequest]:
        kernel = Kernel(backend, SchedulerConfig(policy, quantum=3), pool_size=pool)  # type: ignore[arg-type]
        requests = []
        for index, ask in enumerate(asks):
            requests.append(
                LLMRequest.for_messages(
                    backend, [Message("user", ask)], run_id=f"r{index}", agent="A", max_tokens=24
                )
            )
        requests[0].schema = fruits
        futures = kernel.submit_all(requests)
        done = [f.result(timeout=300) for f in futures]
        kernel._executor.close()  # keep the shared backend open for the next schedule
        return done

    fifo = run("fifo", 3)
    rr = run("rr", 1)
    assert [r.response for r in rr] == [r.response for r in fifo]
    assert all(r.response for r in fifo)
    assert sum(r.restores for r in rr) > 0 and sum(r.preemptions for r in rr) > 0
    assert rr[0].preemptions > 0
    picked = json.loads(rr[0].response)
    assert len(picked) == 3 and set(picked) <= set(fruits["items"]["enum"])


def test_a_killed_run_resumes_and_completes(tmp_path: Path) -> None:
    db = tmp_path / "killed.duckdb"
    process = subprocess.Popen(
        [
            *flowengine_command(),
            "run",
            str(AGENTS / "math_agent.yaml"),
            "--input",
            "What is 12 * (3 + 4)?",
            "--db",
            str(db),
            "--max-tokens",
            "24",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    run_id = None
    for line in process.stdout:
        if " #2 " in line:
            run_id = line.split()[1]
            break
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert run_id is not None, process.stderr.read() if process.stderr else ""
    before = _stored(db, f"SELECT seq FROM steps WHERE run_id = '{run_id}' ORDER BY seq")
    assert [s for (s,) in before][:2] == [1, 2]
    assert _stored(db, f"SELECT status FROM runs WHERE run_id = '{run_id}'") == [("running",)]

    resumed = run_cli("resume", run_id, "--db", str(db), "--json", timeout=900)
    assert resumed.returncode in (0, 1), resumed.stderr
    [outcome] = json.loads(resumed.stdout)
    assert outcome["status"] in ("completed", "max_visits")
    seqs = [
        s for (s,) in _stored(db, f"SELECT seq FROM steps WHERE run_id = '{run_id}' ORDER BY seq")
    ]
    assert seqs == list(range(1, outcome["steps"] + 1))
    assert _stored(db, f"SELECT status FROM runs WHERE run_id = '{run_id}'") == [
        (outcome["status"],)
    ]
    again = run_cli("resume", run_id, "--db", str(db))
    assert again.returncode == 1 and "nothing to resume" in again.stderr


def test_a_run_waits_for_a_person_and_resumes_with_the_answer(tmp_path: Path) -> None:
    """Input steps on the real model: the model writes, the run waits, the process exits 3,
    and a resume with the answer completes with it stored."""
    agent = tmp_path / "ask.yaml"
    agent.write_text(
        "name: AskFirst\n"
        "steps:\n"
        "  draft:\n"
        "    type: process\n"
        "    instruction: 'Name one city to visit for: {{ task }}'\n"
        "    save_as: idea\n"
        "    next: confirm\n"
        "  confirm:\n"
        "    type: input\n"
        "    ask: 'The model suggests: {{ idea }}. Go there? (yes/no)'\n"
        "    save_as: reply\n"
        "    next: done\n"
        "  done:\n"
        "    type: terminal\n"
        "    output: '{{ reply }}: {{ idea }}'\n"
    )
    db = tmp_path / "ask.duckdb"
    done = run_cli(
        "run", str(agent), "-i", TRIP, "--db", str(db), "--max-tokens", "8", "--json",
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["status"] == "waiting"
    [(idea,)] = _stored(db, "SELECT result FROM steps WHERE step_id = 'draft'")
    assert outcome["question"] == f"The model suggests: {json.loads(idea)}. Go there? (yes/no)"
    assert _stored(db, "SELECT count(*) FROM llm_requests") == [(1,)]
    resumed = run_cli(
        "resume", outcome["run_id"], "--answer", "yes", "--db", str(db), "--json", timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    [final] = json.loads(resumed.stdout)
    assert final["status"] == "completed" and final["output"] == f"yes: {json.loads(idea)}"
    assert _stored(db, "SELECT step_id, result FROM steps ORDER BY seq") == [
        ("draft", idea),
        ("confirm", '"yes"'),
        ("done", json.dumps(final["output"], ensure_ascii=False)),
    ]
    assert _stored(db, "SELECT count(*) FROM llm_requests") == [(1,)]  # no model call after


CALIBRATED_AGENT = """\
name: Router
description: You sort customer emails.
steps:
  route:
    type: decision
    question: "Which department should handle this email: {{ task }}"
    examples:
      - {input: "I was charged twice this month.", label: billing}
      - {input: "The app crashes when I log in.", label: support}
    branches:
      billing: done
      support: done
    save_as: department
  done:
    type: terminal
    output: "{{ department }}"
"""


def test_a_decision_is_calibrated_through_the_real_kernel_and_stored(tmp_path: Path) -> None:
    agent = tmp_path / "router.yaml"
    agent.write_text(CALIBRATED_AGENT)
    db = tmp_path / "router.duckdb"
    done = run_cli("run", str(agent), "--input", "My invoice is wrong.", "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["status"] == "completed" and outcome["output"] in ("billing", "support")
    [(prompt, response, stored)] = _stored(
        db, "SELECT prompt, response, label_scores FROM llm_requests WHERE kind = 'choose'"
    )
    assert response == outcome["output"]
    assert "Example: I was charged twice this month.\nAnswer: billing" in prompt
    scores = json.loads(stored)
    assert set(scores) == {"billing", "support"}
    for label in scores:
        raw, content_free = scores[label]["raw"], scores[label]["content_free"]
        assert raw < 0 and content_free < 0
        assert scores[label]["calibrated"] == pytest.approx(raw - content_free, abs=1e-3)
    assert response == max(scores, key=lambda label: scores[label]["calibrated"])


def test_content_free_scores_are_computed_once_per_prompt_and_labels(
    backend: CTransformersBackend,
) -> None:
    from flowengine.runtime import prompts

    labels = ["positive", "negative"]
    content_free = prompts.content_free_messages("You read reviews.", True, labels)
    kernel = Kernel(backend, SchedulerConfig("fifo"), pool_size=1)
    done = []
    for review in ("Lovely room, great staff.", "Dirty and loud."):
        ask = prompts.decision_ask("What is the sentiment of the review?", labels)
        request = LLMRequest.for_messages(
            backend,
            prompts.messages("You read reviews.", review, [], ask),
            run_id=f"run {review}",
            agent="A",
            max_tokens=1,
            labels=labels,
            content_free=content_free,
        )
        done.append(kernel.run_request(request))
    kernel._executor.close()  # keep the shared backend open for the other tests
    assert all(request.response in labels for request in done)
    first, second = done
    assert first.label_content_free_scores == second.label_content_free_scores
    assert len(kernel._content_free_scores) == 1
    for request in done:
        for label in labels:
            calibrated = request.label_raw_scores[label] - request.label_content_free_scores[label]
            assert request.label_scores[label] == pytest.approx(calibrated)


WORD_PROBLEMS = [
    ("What is 12 times 7?", 84),
    ("A ticket costs 7 dollars. How much do 9 tickets cost?", 63),
    ("A prize of 900 dollars is shared equally among 3 winners. How much does each get?", 300),
    ("A bike costs 200 dollars. Its price rises by 15 percent. What is the new price?", 230),
]


def test_math_agent_answers_word_problems_with_the_calculators_number(tmp_path: Path) -> None:
    """The issue's failing case first ("What is 12 times 7?" looped until max_visits), then
    word problems of other kinds; every output is JSON with the number the calculator gave."""
    batch = tmp_path / "problems.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"agent": str(AGENTS / "math_agent.yaml"), "input": task}) + "\n"
            for task, _ in WORD_PROBLEMS
        )
    )
    db = tmp_path / "math.duckdb"
    done = run_cli("run", "--batch", str(batch), "--db", str(db), "--json", timeout=900)
    assert done.returncode == 0, done.stderr
    outcomes = json.loads(done.stdout)
    assert [o["status"] for o in outcomes] == ["completed"] * len(WORD_PROBLEMS)
    for outcome, (task, expected) in zip(outcomes, WORD_PROBLEMS, strict=True):
        assert outcome["output_valid"] is True, (task, outcome["output_errors"])
        assert set(outcome["output"]) == {"answer", "explanation"}
        assert outcome["output"]["answer"] == expected, (task, outcome["output"])
        [(value,)] = _stored(
            db,
            f"SELECT result->>'value' FROM tool_calls WHERE run_id = '{outcome['run_id']}'",
        )
        assert float(value) == expected  # the calculator's number, not retyped
        # The explanation: the calculation, then the model's sentence, held to words.
        calculation, sentence = outcome["output"]["explanation"].split(". ", 1)
        assert calculation.endswith(f"= {expected}")
        assert sentence and not any(c.isdigit() for c in sentence), sentence
    # Every expression was held to its pattern while it was generated.
    assert _stored(db, "SELECT count(*) FROM errors WHERE code = 'output-invalid'") == [(0,)]

    alone = run_cli("run", str(AGENTS / "math_agent.yaml"), "-i", "What is 12 times 7?",
                    "--db", str(db), "--json", timeout=300)  # fmt: skip
    assert alone.returncode == 0, alone.stderr
    [outcome] = json.loads(alone.stdout)
    assert outcome["output"]["answer"] == 84
    assert outcome["output"]["explanation"].startswith("12 * 7 = 84.")

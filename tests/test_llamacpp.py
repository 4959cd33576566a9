"""The llama-cpp backend on the real embedded GGUF file, with batched decoding: concurrent
runs share decodes under fifo and rr, with correct records; a constrained reply stays
valid through preemption and eviction; the model's own chat template; clear errors; and
tiny files of today's architectures (Qwen2, Llama 3, Gemma 3) running an agent."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from flowengine.kernel.backends.base import Message, chatml
from flowengine.kernel.backends.llamacpp import LlamaCppBackend
from flowengine.kernel.kernel import Kernel
from flowengine.kernel.llm_request import LLMRequest
from flowengine.kernel.scheduler import SchedulerConfig
from tests.conftest import AGENTS, run_cli
from tests.tiny_models import write_tiny_model

MATH = str(AGENTS / "math_agent.yaml")
# Every step kind in a few steps: text, a decision scored by labels, JSON constrained to a
# schema (whose grammar state must survive preemption), and a tool.
NOTES = """\
name: Notes
description: Makes short notes about a task.
tools: [calculator]
steps:
  outline:
    type: process
    instruction: List the main parts of the task, one line each.
    save_as: outline
    next: size
  size:
    type: decision
    question: Is the task large?
    branches: {yes: count, no: count}
  count:
    type: process
    tool: calculator
    args: {expression: "2 * 3"}
    next: summary
  summary:
    type: terminal
    instruction: Sum up the task's parts and how much effort it takes.
    format: json
    schema:
      type: object
      properties:
        parts: {type: array, items: {type: string, maxLength: 40}, minItems: 2, maxItems: 3}
        effort: {enum: [low, medium, high]}
      required: [parts, effort]
      additionalProperties: false
"""
TASKS = [
    "What is 12 times 7 plus 3?",
    "What is 45 minus 19?",
    "What is 17 plus 26?",
    "What is 9 times 9?",
]


def _stored(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def _batch_run(tmp_path: Path, policy: str, *extra: str) -> Path:
    notes = tmp_path / "notes.yaml"
    notes.write_text(NOTES)
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"agent": str(notes) if i % 2 else MATH, "input": task}) + "\n"
            for i, task in enumerate(TASKS)
        )
    )
    db = tmp_path / f"{policy}.duckdb"
    done = run_cli(
        "run",
        "--batch",
        str(batch),
        "--backend",
        "llama-cpp",
        "--scheduler",
        policy,
        "--max-tokens",
        "24",
        "--db",
        str(db),
        "--json",
        *extra,
        timeout=900,
    )
    assert done.returncode in (0, 1), done.stderr
    outcomes = json.loads(done.stdout)
    assert len(outcomes) == len(TASKS)
    # The small model may loop until a step's max_visits; a run must never fail.
    assert {o["status"] for o in outcomes} <= {"completed", "max_visits", "max_steps"}
    for outcome in outcomes:
        if outcome["agent"] == "Notes":
            # The constrained reply parses and matches its schema.
            assert outcome["status"] == "completed" and outcome["output_valid"], outcome
            assert outcome["output"]["effort"] in ("low", "medium", "high")
    return db


def _check_records(db: Path, reuse: bool = True) -> None:
    assert _stored(db, "SELECT count(*) FROM llm_requests WHERE error IS NOT NULL") == [(0,)]
    assert _stored(db, "SELECT DISTINCT backend FROM runs") == [("llama-cpp",)]
    # Every request's slices add up to its generated tokens, and it was in some tick.
    mismatched = _stored(
        db,
        "SELECT r.request_id FROM llm_requests r JOIN llm_slices s USING (request_id) "
        "WHERE r.kind = 'generate' GROUP BY r.request_id, r.output_tokens, r.slices "
        "HAVING sum(s.tokens) <> r.output_tokens OR count(*) <> r.slices",
    )
    assert mismatched == []
    in_ticks = {
        request_id
        for (ids,) in _stored(db, "SELECT request_ids FROM batch_ticks")
        for request_id in json.loads(ids)
    }
    requests = {r for (r,) in _stored(db, "SELECT request_id FROM llm_requests")}
    assert requests <= in_ticks
    # Later steps found their beginning in the run's own sequence.
    [(reused, prompt)] = _stored(
        db, "SELECT sum(reused_tokens), sum(prompt_tokens) FROM llm_requests"
    )
    assert 0 < reused < prompt if reuse else reused < prompt
    # Runs shared decodes: some ticks held several requests, never more than the batch.
    [(most, shared)] = _stored(
        db, "SELECT max(sequences), count(*) FILTER (WHERE sequences > 1) FROM batch_ticks"
    )
    assert 1 < most <= 4 and shared > 0


def test_concurrent_runs_share_decodes_under_fifo(tmp_path: Path) -> None:
    db = _batch_run(tmp_path, "fifo", "--max-batch", "4")
    _check_records(db)
    assert _stored(db, "SELECT sum(preemptions), sum(restores) FROM llm_requests") == [(0, 0)]
    # batch_ticks came with schema 6: a file from before has none, and the two are still
    # read together by stats, the batch size shown where there is one.
    older = Path(__file__).parent / "data" / "v1.duckdb"
    done = run_cli("stats", "--db", str(db), "--db", str(older), "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["scheduler"]
    batched = [row for row in rows if row["mean_batch"] is not None]
    assert batched and all(1 <= row["mean_batch"] <= 4 for row in batched)
    assert any(row["mean_batch"] is None for row in rows)  # the older file's runs


def test_round_robin_preempts_when_the_batch_is_full(tmp_path: Path) -> None:
    # Two places and two sequences for four runs: requests leave the batch after their
    # quantum and come back, some after their sequence went to another run.
    db = _batch_run(tmp_path, "rr", "--max-batch", "2", "--quantum", "4", "--pool", "2")
    _check_records(db, reuse=False)
    [(preemptions, restores)] = _stored(
        db, "SELECT sum(preemptions), sum(restores) FROM llm_requests"
    )
    assert preemptions > 0 and restores > 0
    assert _stored(db, "SELECT max(sequences) FROM batch_ticks") == [(2,)]
    stats = run_cli("stats", "--db", str(db), "--format", "json")
    assert stats.returncode == 0, stats.stderr
    assert {row["agent"] for row in json.loads(stats.stdout)["scheduler"]} == {"MathAgent", "Notes"}


def test_constrained_replies_stay_valid_through_preemption_and_eviction() -> None:
    """Two places, two sequences, three requests under rr with a quantum of 3: each
    constrained reply leaves the batch, loses its sequence and is rebuilt, and its grammar
    state, kept on the request, still gives a valid reply."""
    backend = LlamaCppBackend(sequences=2, max_batch=2)
    kernel = Kernel(backend, SchedulerConfig("rr", quantum=3))  # type: ignore[arg-type]
    fruits = {
        "type": "array",
        "minItems": 3,
        "maxItems": 3,
        "items": {"enum": ["apple", "banana", "cherry", "grape", "mango"]},
    }
    try:
        requests = []
        for index, ask in enumerate(["Name three fruits.", "Pick fruits.", "Fruit salad?"]):
            request = LLMRequest.for_messages(
                backend, [Message("user", ask)], run_id=f"r{index}", agent="A", max_tokens=40
            )
            request.schema = fruits
            requests.append(request)
        done = [f.result(timeout=300) for f in kernel.submit_all(requests)]
    finally:
        kernel.close()
    assert sum(r.preemptions for r in done) > 0 and sum(r.restores for r in done) > 0
    for request in done:
        assert request.error is None
        picked = json.loads(request.response)
        assert len(picked) == 3 and set(picked) <= set(fruits["items"]["enum"])
    assert max(tick.sequences for tick in kernel.recent_ticks) == 2


def test_a_decision_scores_labels_in_the_batch() -> None:
    backend = LlamaCppBackend(max_batch=4)
    kernel = Kernel(backend, SchedulerConfig("fifo"))  # type: ignore[arg-type]
    try:
        asks = ["Is 7 a prime number? Answer yes or no.", "Is the sky green? Answer yes or no."]
        requests = [
            LLMRequest.for_messages(
                backend,
                [Message("user", ask)],
                run_id=f"d{i}",
                agent="A",
                max_tokens=1,
                labels=["yes", "no", "maybe later"],
                content_free=[Message("user", "N/A")],
            )
            for i, ask in enumerate(asks)
        ]
        done = [f.result(timeout=300) for f in kernel.submit_all(requests)]
    finally:
        kernel.close()
    for request in done:
        assert request.response in ("yes", "no", "maybe later")
        # "maybe later" has several tokens: each scored, all finite and negative.
        assert set(request.label_raw_scores) == {"yes", "no", "maybe later"}
        assert all(score < 0 for score in request.label_raw_scores.values())
        assert request.label_content_free_scores
    # The content-free prompt was scored once, for both requests.
    assert done[0].label_content_free_scores == done[1].label_content_free_scores


def test_the_model_files_own_chat_template_is_used() -> None:
    backend = LlamaCppBackend(sequences=1, max_batch=1)
    try:
        chat = [Message("system", "Be brief."), Message("user", "Hi")]
        # SmolLM2's GGUF carries a ChatML template: the same text the ctransformers
        # backend builds, so prompts and their tokens match between the two.
        assert backend.chat_prompt(chat) == chatml(chat)
        # Without a system message, the file's template adds its own.
        assert "SmolLM" in backend.chat_prompt([Message("user", "Hi")])
        tokens = backend.encode(chatml(chat))
        assert backend.decode(backend.encode("Hello, world!")) == "Hello, world!"
        assert backend.encode("<|im_start|>") == [tokens[0]]
    finally:
        backend.close()


def test_a_file_llama_cpp_cannot_load_is_one_clear_line(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 64)
    done = run_cli(
        "run",
        MATH,
        "--input",
        "1+1",
        "--backend",
        "llama-cpp",
        "--model",
        str(bogus),
        "--db",
        str(tmp_path / "x.duckdb"),
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert f"{bogus}: llama.cpp cannot load this file as a model" in done.stderr
    wrong = run_cli("run", MATH, "--input", "1+1", "--max-batch", "4")
    assert wrong.returncode == 2 and "--max-batch goes with --backend llama-cpp" in wrong.stderr


@pytest.mark.parametrize(
    ("arch", "marker"),
    [
        ("qwen2", "<|im_start|>user"),
        ("llama", "<|start_header_id|>user"),
        ("gemma3", "<start_of_turn>user"),
    ],
)
def test_todays_architectures_load_and_run_every_step_kind(
    tmp_path: Path, arch: str, marker: str
) -> None:
    """Tiny random-weight files of Qwen2, Llama 3 and Gemma 3 (tests/tiny_models.py): each
    loads, runs an agent with text, a decision, a tool and a constrained JSON reply, and
    its prompts are written in the file's own chat template."""
    model = write_tiny_model(tmp_path / f"tiny-{arch}.gguf", arch)
    agent = tmp_path / "notes.yaml"
    agent.write_text(NOTES)
    db = tmp_path / f"{arch}.duckdb"
    done = run_cli(
        "run",
        str(agent),
        "--input",
        "Plan a picnic",
        "--backend",
        "llama-cpp",
        "--model",
        str(model),
        "--max-tokens",
        "12",
        "--db",
        str(db),
        "--json",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["status"] == "completed" and outcome["output_valid"], outcome
    assert outcome["output"]["effort"] in ("low", "medium", "high")
    assert _stored(db, "SELECT DISTINCT model FROM runs") == [(model.name,)]
    prompts = [p for (p,) in _stored(db, "SELECT prompt FROM llm_requests")]
    assert prompts and all(marker in prompt for prompt in prompts)

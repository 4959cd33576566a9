"""Decision quality on the embedded model: label scoring (raw and calibrated) vs the AIOS way.

Two sets of labelled decisions: ``bench/data/decisions.jsonl`` (64, the kinds our agents
ask: yes/no, city or state, one of three or four) was the tuning set every idea was
measured on; ``bench/data/decisions_holdout.jsonl`` (44: sentiment, priority, routing,
units, comparisons, negated questions, long contexts) was written before any tuning and
only measured at the end. Each decision is answered on the same model by:

- **label log-probability, raw**: the label whose tokens are most probable as the reply
  (a decision step without ``examples``, by default).
- **label log-probability, calibrated**: the same scores minus each label's score after a
  content-free prompt (the task and question replaced by "N/A"), Zhao et al. 2021. Both
  come from one ``choose`` request through the kernel; always one of the labels.
- both again with two **worked examples** in the prompt, as a decision step's ``examples``
  (calibrated is the default with examples): the nearest other decisions of the same kind
  in the same set, with different answers where possible; never the decision itself.
- **AIOS way**: the branches as a numbered list, a free-text reply, parsed for a number or a
  label; an unparseable reply is retried with rising temperature, up to three times.

    python bench/decisions.py         # prints JSON; bench/run.py puts it in BENCHMARKS.md
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowengine.kernel.backends.ctransformers import GREEDY, CTransformersBackend  # noqa: E402
from flowengine.kernel.kernel import Kernel  # noqa: E402
from flowengine.kernel.llm_request import LLMRequest  # noqa: E402
from flowengine.kernel.scheduler import SchedulerConfig  # noqa: E402
from flowengine.runtime import prompts  # noqa: E402

SETS = {
    "tuning": ROOT / "bench" / "data" / "decisions.jsonl",
    "holdout": ROOT / "bench" / "data" / "decisions_holdout.jsonl",
}
SYSTEM = "You are a helpful assistant that plans trips, solves arithmetic and recommends."
RETRY_TEMPERATURES = (0.5, 0.8, 1.1)
AIOS_MAX_TOKENS = 12


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def worked_examples(items: list[dict[str, Any]], index: int) -> list[tuple[str, str]]:
    """Two worked examples for item ``index`` from the other items of its kind in the same
    set (never itself): the nearest one, and the nearest after it with another answer."""
    item = items[index]
    others = [i for i, other in enumerate(items) if i != index and other["kind"] == item["kind"]]
    same_labels = [i for i in others if items[i]["labels"] == item["labels"]]
    near = sorted(same_labels or others, key=lambda i: abs(i - index))
    picked = near[:1] + [i for i in near[1:] if items[i]["answer"] != items[near[0]]["answer"]][:1]
    picked = picked if len(picked) == 2 else near[:2]
    return [(f"{items[i]['task']} {items[i]['question']}", items[i]["answer"]) for i in picked]


def by_label_scores(
    kernel: Kernel, item: dict[str, Any], examples: list[tuple[str, str]]
) -> tuple[str, str]:
    """The raw and the calibrated choice, from one request as an agent's decision makes it."""
    backend = kernel.backend
    labels = item["labels"]
    ask = prompts.decision_ask(item["question"], labels, examples)
    request = LLMRequest.for_messages(
        backend,
        prompts.messages(SYSTEM, item["task"], [], ask),
        run_id="bench",
        agent="bench",
        step_id="decide",
        max_tokens=1,
        labels=labels,
        content_free=prompts.content_free_messages(SYSTEM, True, labels, examples),
    )
    done = kernel.run_request(request)
    raw = max(labels, key=lambda label: done.label_raw_scores[label])
    return raw, done.response


def parse_choice(reply: str, labels: list[str]) -> str | None:
    """A number from the list, or else exactly one label named in the reply."""
    number = re.search(r"\d+", reply)
    if number and 1 <= int(number.group()) <= len(labels):
        return labels[int(number.group()) - 1]
    named = [label for label in labels if re.search(rf"\b{re.escape(label)}\b", reply, re.I)]
    return named[0] if len(named) == 1 else None


def the_aios_way(
    llm: Any, backend: CTransformersBackend, item: dict[str, Any]
) -> tuple[str | None, int]:
    """The choice (None when no attempt parsed) and how many attempts were made."""
    options = "\n".join(f"{i}. {label}" for i, label in enumerate(item["labels"], 1))
    ask = (
        f"{item['question']}\nChoose one of these options and reply with its number only:\n"
        f"{options}"
    )
    prompt = backend.chat_prompt(prompts.messages(SYSTEM, item["task"], [], ask))
    ids = backend.encode(prompt)
    settings: list[dict[str, Any]] = [GREEDY] + [
        {**GREEDY, "top_k": 40, "top_p": 0.95, "temperature": t, "seed": i}
        for i, t in enumerate(RETRY_TEMPERATURES, 1)
    ]
    for attempt, sampling in enumerate(settings, 1):
        produced: list[int] = []
        for token in llm.generate(ids, **sampling, batch_size=64, reset=True):
            if token == backend.eos_token_id or len(produced) >= AIOS_MAX_TOKENS:
                break
            produced.append(token)
        choice = parse_choice(backend.decode(produced), item["labels"])
        if choice is not None:
            return choice, attempt
    return None, len(settings)


def measure(kernel: Kernel, llm: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
    methods: dict[str, list[tuple[bool, float]]] = {
        "label_scores": [],
        "calibrated": [],
        "examples_raw": [],
        "examples_calibrated": [],
    }
    aios: list[tuple[bool, bool, int, float]] = []
    backend = kernel.backend
    assert isinstance(backend, CTransformersBackend)
    for index, item in enumerate(items):
        for examples, names in (
            ([], ("label_scores", "calibrated")),
            (worked_examples(items, index), ("examples_raw", "examples_calibrated")),
        ):
            start = time.perf_counter()
            picks = by_label_scores(kernel, item, examples)
            seconds = time.perf_counter() - start
            for name, picked in zip(names, picks, strict=True):
                methods[name].append((picked == item["answer"], seconds))
        start = time.perf_counter()
        choice, attempts = the_aios_way(llm, backend, item)
        aios.append(
            (choice == item["answer"], choice is None, attempts, time.perf_counter() - start)
        )
    kinds = sorted({item["kind"] for item in items})

    def accuracy(rows: list[Any], kind: str | None = None) -> float:
        chosen = [r for r, item in zip(rows, items, strict=True) if kind in (None, item["kind"])]
        return sum(r[0] for r in chosen) / len(chosen)

    def scored(rows: list[tuple[bool, float]]) -> dict[str, Any]:
        return {
            "accuracy": accuracy(rows),
            "accuracy_by_kind": {kind: accuracy(rows, kind) for kind in kinds},
            "invalid": 0,
            "seconds_per_decision": statistics.median(r[1] for r in rows),
        }

    return {
        "questions": len(items),
        "by_kind": {kind: sum(item["kind"] == kind for item in items) for kind in kinds},
        **{name: scored(rows) for name, rows in methods.items()},
        "aios": {
            "accuracy": accuracy(aios),
            "accuracy_by_kind": {kind: accuracy(aios, kind) for kind in kinds},
            "invalid": sum(r[1] for r in aios),
            "retried": sum(r[2] > 1 for r in aios),
            "mean_attempts": statistics.mean(r[2] for r in aios),
            "seconds_per_decision": statistics.median(r[3] for r in aios),
        },
    }


def main() -> dict[str, Any]:
    from ctransformers import LLM, Config

    backend = CTransformersBackend()
    prepared = backend._prepared
    llm = LLM(
        str(prepared.path),
        model_type=prepared.model_type,
        config=Config(context_length=backend.context_length, threads=backend.threads.threads()),
    )
    kernel = Kernel(backend, SchedulerConfig("fifo"), pool_size=1)
    kernel.contexts.prewarm()
    try:
        return {name: measure(kernel, llm, load(path)) for name, path in SETS.items()}
    finally:
        kernel.close()


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))

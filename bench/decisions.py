"""Decision quality on the embedded model: label log-probability vs the AIOS way.

``bench/data/decisions.jsonl`` holds labelled decisions of the kinds our agents ask (yes/no,
city or state, one of three or four). Each is answered twice on the same model:

- **label log-probability** (flowengine): a ``choose`` request through the kernel; the label
  whose tokens are most probable as the reply wins. Always one of the labels.
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

from flowengine.kernel.backends.local import GREEDY, LocalBackend  # noqa: E402
from flowengine.kernel.kernel import Kernel  # noqa: E402
from flowengine.kernel.requests import LLMRequest  # noqa: E402
from flowengine.kernel.scheduler import SchedulerConfig  # noqa: E402
from flowengine.runtime import prompts  # noqa: E402

DATA = ROOT / "bench" / "data" / "decisions.jsonl"
SYSTEM = "You are a helpful assistant that plans trips, solves arithmetic and recommends."
RETRY_TEMPERATURES = (0.5, 0.8, 1.1)
AIOS_MAX_TOKENS = 12


def load() -> list[dict[str, Any]]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line]


def by_label_scores(kernel: Kernel, item: dict[str, Any]) -> str:
    backend = kernel.backend
    ask = prompts.decision_ask(item["question"], item["labels"])
    request = LLMRequest.for_messages(
        backend,
        prompts.messages(SYSTEM, item["task"], [], ask),
        run_id="bench",
        agent="bench",
        step_id="decide",
        max_tokens=1,
        labels=item["labels"],
    )
    return kernel.run_request(request).response


def parse_choice(reply: str, labels: list[str]) -> str | None:
    """A number from the list, or else exactly one label named in the reply."""
    number = re.search(r"\d+", reply)
    if number and 1 <= int(number.group()) <= len(labels):
        return labels[int(number.group()) - 1]
    named = [label for label in labels if re.search(rf"\b{re.escape(label)}\b", reply, re.I)]
    return named[0] if len(named) == 1 else None


def the_aios_way(llm: Any, backend: LocalBackend, item: dict[str, Any]) -> tuple[str | None, int]:
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


def main() -> dict[str, Any]:
    from ctransformers import LLM, Config

    items = load()
    backend = LocalBackend()
    prepared = backend._prepared
    llm = LLM(
        str(prepared.path),
        model_type=prepared.model_type,
        config=Config(context_length=backend.context_length, threads=backend._threads),
    )
    kernel = Kernel(backend, SchedulerConfig("fifo"), pool_size=1)
    kernel.contexts.prewarm()
    ours: list[tuple[bool, float]] = []
    aios: list[tuple[bool, bool, int, float]] = []
    for item in items:
        start = time.perf_counter()
        picked = by_label_scores(kernel, item)
        ours.append((picked == item["answer"], time.perf_counter() - start))
        start = time.perf_counter()
        choice, attempts = the_aios_way(llm, backend, item)
        aios.append(
            (choice == item["answer"], choice is None, attempts, time.perf_counter() - start)
        )
    kernel.close()
    kinds = sorted({item["kind"] for item in items})

    def accuracy(rows: list[Any], kind: str | None = None) -> float:
        chosen = [r for r, item in zip(rows, items, strict=True) if kind in (None, item["kind"])]
        return sum(r[0] for r in chosen) / len(chosen)

    return {
        "questions": len(items),
        "by_kind": {kind: sum(item["kind"] == kind for item in items) for kind in kinds},
        "label_scores": {
            "accuracy": accuracy(ours),
            "accuracy_by_kind": {kind: accuracy(ours, kind) for kind in kinds},
            "invalid": 0,
            "seconds_per_decision": statistics.median(r[1] for r in ours),
        },
        "aios": {
            "accuracy": accuracy(aios),
            "accuracy_by_kind": {kind: accuracy(aios, kind) for kind in kinds},
            "invalid": sum(r[1] for r in aios),
            "retried": sum(r[2] > 1 for r in aios),
            "mean_attempts": statistics.mean(r[2] for r in aios),
            "seconds_per_decision": statistics.median(r[3] for r in aios),
        },
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))

"""The kernel, after the AIOS design: what every run shares.

``kernel.py`` (the facade the runtime calls; it picks the executor), ``scheduler.py``
(the one ready queue and its fifo / round-robin policy, for every executor),
``decoding.py`` (the one decode path: each request a small task that generates, scores
labels, constrains and calibrates), the executors that serve the queue (``serial.py``
on KV caches, ``batching.py`` continuous batching on llama.cpp, ``server_executor.py``
requests to a model server), ``context.py`` (the pool of KV caches or sequences: reuse,
LRU eviction, rebuild), ``memory.py``, ``access.py``, and ``backends/`` (one module a
model runtime). It writes its records to ``storage`` and knows nothing of agent files.
"""

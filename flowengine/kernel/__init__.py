"""The kernel, after the AIOS design: what every run shares.

``kernel.py`` (the facade the runtime calls), ``scheduler.py`` (fifo and round-robin over
one model), ``context.py`` (KV caches: reuse, snapshot and restore on preemption),
``batching.py`` (continuous batching on llama.cpp), ``server_executor.py`` (requests to
a model server), ``memory.py``, ``access.py``, and ``backends/`` (one module a model
runtime). It writes its records to ``storage`` and knows nothing of agent files.
"""

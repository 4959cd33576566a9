"""flowengine: declarative LLM agents as YAML state machines.

The layers, each importing only those below it (``tests/test_layers.py`` enforces it):

- ``agentfile``: load an agent file, check it against its JSON Schema, diagnostics;
- ``graph``: build the networkx graph and check it (reachability, data, tools);
- ``runtime``: the interpreter that walks the graph, one run at a time;
- ``kernel``: scheduler, context (KV caches), memory, access control and the model
  backends, shared by every run;
- ``storage``: DuckDB (and its journal), where every run, step and request is kept.

``tools``, ``viz`` and ``importers`` sit beside them; ``cli``, ``lsp`` and ``ui`` on top.
"""

__version__ = "0.1.0"

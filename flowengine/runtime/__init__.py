"""The runtime: interprets an agent's graph, sending its LLM and tool calls to the kernel."""

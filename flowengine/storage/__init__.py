"""Storage layer: every run, step, LLM request, slice, tool call and error, in DuckDB."""

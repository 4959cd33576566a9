"""``flowengine ui``: a local, read-only web page over the runs stored in DuckDB."""

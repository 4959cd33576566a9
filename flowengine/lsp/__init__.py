"""``flowengine lsp``: a language server for agent files (diagnostics, completion,
definition, hover), built on pygls."""

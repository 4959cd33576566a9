"""Step kinds: one module per kind (process, decision, input, terminal) holding all that
kind means; ``registry`` maps a step's ``type`` to its kind, ``base`` says what a kind is.

To add a kind, write a module like ``process.py`` (or a plugin package, see README.md,
"Writing a step-kind plugin"); nothing else in flowengine names a kind.
"""

"""Tests of agents, written in YAML: test files, mocks, the runner and its reports."""

"""Importers: other agent formats to flowengine YAML."""

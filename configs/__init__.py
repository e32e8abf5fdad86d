"""Bundled YAML configurations (installed as package data)."""

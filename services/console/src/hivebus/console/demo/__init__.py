"""Bundled demo: configuration, plans and scripted models."""

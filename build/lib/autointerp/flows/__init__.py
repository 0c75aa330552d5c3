"""Prefect flows: thin wrappers that run autointerp's stages as tasks."""

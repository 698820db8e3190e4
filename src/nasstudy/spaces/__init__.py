"""Spaces of the nasstudy pipeline."""

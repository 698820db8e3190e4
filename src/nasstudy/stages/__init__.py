"""Stages of the nasstudy pipeline."""

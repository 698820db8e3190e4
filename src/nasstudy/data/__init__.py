"""Data of the nasstudy pipeline."""

"""Transfer of the nasstudy pipeline."""

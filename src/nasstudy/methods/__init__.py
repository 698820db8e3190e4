"""Methods of the nasstudy pipeline."""

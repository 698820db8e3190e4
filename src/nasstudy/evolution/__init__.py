"""Evolution of the nasstudy pipeline."""

"""nasstudy: a reproducible, workflow-managed neural-architecture-search study."""

__version__ = "0.1.0"

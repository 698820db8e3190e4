"""Rule `ranking_sample`: the runner calls `nasstudy.stages.<rule>.run`; the code lives with the
rest of the ranking stage in nasstudy.stages.ranking."""

from nasstudy.stages.ranking import run_sample as run

__all__ = ["run"]

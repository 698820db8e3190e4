"""The report's transfer part: per-class tables from the transfer jobs' metrics.json and links to
their examples.png (the report stage, nasstudy.stages.report, parses the paths and calls these).

metrics.json of a transfer job holds `per_class`: {class name: AP (detection) or IoU
(segmentation), percent}. Jobs are named `space / method`; a class a job did not report is blank.
"""

from __future__ import annotations

from typing import Any

TASK_TITLES = {
    "detection": (
        "Detection: AP per category (%)",
        "Categories with at least `min_instances` (default 5) ground-truth boxes in the val scenes.",
    ),
    "segmentation": (
        "Segmentation: IoU per class (%)",
        "Classes present in the val ground truth, background included.",
    ),
}
TASK_ORDER = ("detection", "segmentation")


def _job(info: dict[str, Any]) -> str:
    return f"{info['space']} / {info['method']}"


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _tasks(names: set[str]) -> list[str]:
    return [t for t in TASK_ORDER if t in names] + sorted(names - set(TASK_ORDER))


def class_order(names: set[str]) -> list[str]:
    """`background` first, then the classes alphabetically (metrics.json keeps no label order)."""
    return (["background"] if "background" in names else []) + sorted(names - {"background"})


def per_class_tables(
    jobs: list[tuple[dict[str, Any], dict[str, Any]]], order: list[tuple[str, str]]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """{task: {"space / method": {class: value}}} from (parsed path, metrics) pairs; jobs in `order`
    ((space, method) pairs, the main table's row order), any others after it alphabetically."""
    rank = {key: i for i, key in enumerate(order)}
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for info, m in sorted(jobs, key=lambda j: (rank.get((j[0]["space"], j[0]["method"]), len(rank)), _job(j[0]))):
        per_class = m.get("per_class")
        if isinstance(per_class, dict) and per_class:
            out.setdefault(info["task"], {})[_job(info)] = {str(k): _num(v) for k, v in sorted(per_class.items())}
    return {t: out[t] for t in _tasks(set(out))}


def table_lines(tables: dict[str, dict[str, dict[str, float | None]]]) -> list[str]:
    """Markdown: one table per task, rows = class, columns = space / method."""
    if not tables:
        return []
    lines = ["", "## Per-class transfer results"]
    for task, jobs in tables.items():
        title, note = TASK_TITLES.get(task, (f"{task}: per class (%)", ""))
        names = class_order({c for values in jobs.values() for c in values})
        lines += ["", f"### {title}", ""]
        if note:
            lines += [note, ""]
        lines.append("| Class | " + " | ".join(jobs) + " |")
        lines.append("|---|" + "---:|" * len(jobs))
        for c in names:
            cells = ["—" if v is None else f"{v:.2f}" for v in (jobs[j].get(c) for j in jobs)]
            lines.append("| " + " | ".join([c.replace("|", "&#124;"), *cells]) + " |")  # a | would split the row
    return lines


def example_lines(examples: list[dict[str, Any]]) -> list[str]:
    """Figures-section lines: per task, links (relative to report/summary.md) to each job's examples.png."""
    by_task: dict[str, list[str]] = {}
    for info in examples:
        rel = f"../transfer/{info['task']}/{info['space']}/{info['method']}/{info['file']}"
        by_task.setdefault(info["task"], []).append(f"[{_job(info)}]({rel})")
    return [
        f"- transfer examples, {task} (first val scenes with predictions): " + ", ".join(by_task[task]) + "."
        for task in _tasks(set(by_task))
    ]

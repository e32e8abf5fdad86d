"""The run report: what one nightly run did, as Markdown with the scenes' previews.

``OUTBOX/reports/<run id>.md`` (and a copy as ``OUTBOX/report.md``, the latest) lists the
run's counts, then the catalog rows of the scenes this run attempted (status, attempts,
seconds, metrics, the error of a failed one) and the preview PNG of each done scene (the
scene with its road layer drawn, from :func:`roadnet.pipeline.preview.make_preview`).
"""

from __future__ import annotations

from roadnet.pipeline.nightly._outbox import join, write_bytes
from roadnet.pipeline.nightly.catalog import Row

__all__ = ["render_report", "write_report"]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_report(
    *, run_id: str, inbox: str, outbox: str, lines: list[str], rows: list[Row]
) -> str:
    """The report's Markdown (preview links relative to the outbox)."""
    out = [f"# roadnet nightly run {run_id}", "", f"Inbox `{inbox}`, outbox `{outbox}`.", ""]
    out += [f"- {line}" for line in lines]
    out.append("")
    if rows:
        head = ["scene", "status", "attempts", "run s", "vectorize s", "components", "km",
                "nodes", "road chunks", "error"]  # fmt: skip
        keys = ["scene_id", "status", "attempts", "run_seconds", "vectorize_seconds",
                "components", "km", "nodes", "road_chunks", "error"]  # fmt: skip
        out += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        out += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows]
        out.append("")
    for row in rows:
        if row.get("preview"):
            out += [f"## {row['scene_id']}", "", f"![{row['scene_id']}]({row['preview']})", ""]
    return "\n".join(out)


def write_report(outbox: str, run_id: str, text: str) -> str:
    """Write the report as ``reports/<run id>.md`` and ``report.md``; return the first."""
    path = join(outbox, "reports", f"{run_id}.md")
    data = text.replace("](scenes/", "](../scenes/").encode()
    write_bytes(path, data)
    write_bytes(join(outbox, "report.md"), text.encode())
    return path

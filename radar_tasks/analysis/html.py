"""report.html: the report as one page people open in a browser (`write_html`).

What it shows comes from where report.md's comes from: the tables, notes and definitions of `report_context`
(every `{header, rows}` table in it, so a table added there shows here too), the interactive figures of
`interactive` (plotly, drawn from `report.analyse`'s tables) and the per-item drill-down of `drilldown`.

Self-contained: plotly.js, the styles, the script and the data are inline, so the file opens from `file://` with
no network and no server. The drill-down goes to a side file `report-items.js` beside the page (loaded with a
`<script src>`: browsers refuse `fetch()` of `file://`) when it is larger than `INLINE_ITEMS_LIMIT`; the page then
needs that file beside it. PNG figures the page does not redraw (scaling, strategies, ...) are embedded as images.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import jinja2

from radar_tasks.analysis import drilldown, interactive
from radar_tasks.analysis.runs import Run

HTML_FILE = "report.html"
ITEMS_FILE = "report-items.js"
INLINE_ITEMS_LIMIT = 2_000_000  # bytes of drill-down data kept inside the page; above: the side file

# Headings of report_context's tables; a table added to report_context without one gets its key as heading.
TABLE_TITLES = {
    "runs_table": "Runs",
    "scores_table": "Scores: SDS and accuracy by ability (value [95% CI])",
    "subsets_table": "SDS per subset (value ± stderr; chance: first run)",
    "asymmetry_table": "Asymmetry",
    "steps_table": "Asymmetry between consecutive runs of each series",
    "signal_table": "Signal checks",
}
SECTIONS = {"curves": "development_", "radar": "radar_", "heatmaps": "heatmap_"}  # figure name prefixes


def script_json(value) -> str:
    """JSON safe inside a <script> element: no `<` (so no `</script>`), no NaN."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def context_tables(context: dict) -> list[dict]:
    """Every table of `report_context` ({header, rows}), in its order, with a heading."""
    out = []
    for key, value in context.items():
        if isinstance(value, dict) and "header" in value and "rows" in value:
            title = TABLE_TITLES.get(key) or key.removesuffix("_table").replace("_", " ").capitalize()
            out.append({"key": key, "title": title, "header": value["header"], "rows": value["rows"]})
    return out


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@functools.cache
def _resources() -> tuple[jinja2.Template, str, str]:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("radar_tasks.analysis", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    folder = Path(__file__).parent / "templates"
    return (
        env.get_template("report.html.j2"),
        (folder / "report.css").read_text(encoding="utf-8"),
        (folder / "report.js").read_text(encoding="utf-8"),
    )


def write_html(
    runs: Sequence[Run], tables: dict, context: dict, figure_files: dict[str, Path], out: str | os.PathLike
) -> Path:
    """Write `out/report.html` (and `out/report-items.js` when the drill-down is large; an old one is removed
    otherwise); returns the page's path. `tables`: `report.analyse`'s; `context`: `report.report_context`'s;
    `figure_files`: the PNG figures written (name -> path)."""
    import plotly
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    out = Path(out)
    template, css, app_js = _resources()
    drawn, skipped = interactive.draw_all(runs, tables)
    figures_json = "{" + ",".join(f"{json.dumps(name)}:{pio.to_json(fig)}" for name, (_, fig) in drawn.items()) + "}"
    figures_json = figures_json.replace("<", "\\u003c")
    groups = {section: [n for n in drawn if n.startswith(prefix)] for section, prefix in SECTIONS.items()}
    skipped_text = {
        section: "; ".join(reason for n, reason in skipped.items() if n.startswith(prefix)) or "none drawn"
        for section, prefix in SECTIONS.items()
    }
    items = drilldown.item_data(runs, out)
    items_json = script_json(items)
    side = out / ITEMS_FILE
    items_file = None
    if len(items_json.encode("utf-8")) > INLINE_ITEMS_LIMIT:
        side.write_text(f"window.RADAR_ITEMS = {items_json};\n", encoding="utf-8")
        items_file = ITEMS_FILE
    elif side.exists():
        side.unlink()
    static = [
        {"name": f["name"], "caption": f["caption"], "src": _data_uri(figure_files[f["name"]])}
        for f in context["figures"]
        if f["name"] not in interactive.COVERS and f["name"] in figure_files
    ]
    definitions = [
        (key.removesuffix("_doc").replace("_", " "), value)
        for key, value in context.items()
        if key.endswith("_doc") and isinstance(value, str)
    ]
    from radar_tasks import __version__

    page = template.render(
        {
            **context,
            "version": f"{__version__}, plotly {plotly.__version__}",
            "written": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "css": css,
            "plotly_js": get_plotlyjs(),
            "app_js": app_js,
            "groups": groups,
            "skipped_text": skipped_text,
            "tables": context_tables(context),
            "definitions": definitions,
            "static_figures": static,
            "skipped": {**context["figures_skipped"], **skipped},
            "figures_json": figures_json,
            "items_json": items_json,
            "items_file": items_file,
        }
    )
    path = out / HTML_FILE
    path.write_text(page, encoding="utf-8")
    return path

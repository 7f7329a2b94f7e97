"""report.html (radar_tasks.analysis.html, interactive, drilldown): a self-contained page with the tables of
report.md, interactive figures and the per-item drill-down; tested on runs whose results JSONs and per-item logs
the test writes itself (expected probabilities from its own numpy softmax), and in headless Chromium (Playwright
driving Debian's `chromium`): on those runs with the drill-down in its side file, and on the demo sweep
(`tiny_sweep`) with its console, curves, an item's candidates and a screenshot.

Without Chromium (or Playwright) the browser tests are skipped: `apt-get install chromium` and
`pip install -e ".[test]"` (README, "Run the tests"); `RADAR_CHROMIUM` names another Chromium or Chrome binary.
"""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radar_tasks import taxonomy
from radar_tasks.analysis import drilldown, report
from radar_tasks.analysis import html as report_html

STEPS = (100, 200, 300)
MMBENCH = taxonomy.categories("mmbench")[:2]
# (subset, category, items): categories of unequal sizes
LEAVES = [
    ("spatial", "spatial", 5),
    ("wiki_animal", "wiki_animal", 3),
    ("mmbench", MMBENCH[0], 4),
    ("mmbench", MMBENCH[1], 2),
]


def _softmax(x):
    e = np.exp(np.asarray(x, dtype=float) - np.max(x))
    return e / e.sum()


def write_runs(root: Path) -> tuple[list[Path], dict]:
    """Three checkpoints' results JSONs and per-item logs (lmms-eval's layout) over LEAVES, with image files; one
    item skipped, one item missing from the second run. Returns (run folders, {(task, id): [record per run]})."""
    rng = np.random.default_rng(0)
    images = root / "data"
    images.mkdir(parents=True)
    for k in range(4):
        Image.fromarray(rng.integers(0, 256, (60 + 20 * k, 90, 3), dtype=np.uint8)).save(images / f"img{k}.png")
    records: dict[tuple[str, str], list] = {}
    folders = []
    for r, step in enumerate(STEPS):
        folder = root / "runs" / f"step_{step}" / "model"
        folder.mkdir(parents=True)
        results = {}
        for subset, category, n in LEAVES:
            task = taxonomy.task_name(subset, category)
            lines, ps, oks = [], [], []
            for i in range(n):
                item_id = f"{category}-{i}"
                if task == "radar_spatial" and i == 4 and r == 1:
                    records.setdefault((task, item_id), []).append(None)
                    continue  # not in this run's log
                k = 2 + (i % 3)
                skipped = task == "radar_wiki_animal" and i == 2
                scores = None if skipped else (rng.normal(size=k) + np.eye(k)[0] * (r - 1)).tolist()
                p = None if skipped else float(_softmax(scores)[0])
                correct = False if skipped else bool(scores[0] >= max(scores))
                record = {
                    "id": item_id,
                    "subset": subset,
                    "category": category,
                    "ability": taxonomy.ability_of(subset, category),
                    "p": p,
                    "scores": scores,
                    "correct": correct,
                    "skipped": "too_long" if skipped else None,
                    "n_candidates": k,
                    "gold": 0,
                    "convention": "loss",
                    "candidates": [f"answer {item_id}"] + [f"distractor {j} <b>" for j in range(1, k)],
                    "prompt": f"<image> Question {item_id}: what is shown?",
                }
                media = [str(images / f"img{(i + j) % 4}.png") for j in range(1 + i % 2)]
                lines.append(json.dumps({"doc_id": i, "input_media": media, "sds": record}))
                records.setdefault((task, item_id), []).append(record)
                if p is not None:
                    ps.append(p)
                oks.append(float(correct))
            stamp = f"2026010{r + 1}_000000"
            (folder / f"{stamp}_samples_{task}.jsonl").write_text("\n".join(lines) + "\n")
            results[task] = {
                "sds,none": float(np.mean(ps)),
                "sds_stderr,none": 0.05,
                "acc,none": float(np.mean(oks)),
                "acc_stderr,none": 0.1,
                "items,none": len(oks),
                "skipped,none": len(oks) - len(ps),
            }
        (folder / f"{stamp}_results.json").write_text(json.dumps({"results": results, "configs": {}}))
        folders.append(folder.parent)
    return folders, records


def learned_by_hand(correct: list) -> int | None:
    """The first run from which the item stays correct (runs without the item passed over)."""
    known = [i for i, c in enumerate(correct) if c is not None]
    if not known or not correct[known[-1]]:
        return None
    start = known[-1]
    for i in reversed(known):
        if correct[i]:
            start = i
        else:
            break
    return start


class _Scan(html.parser.HTMLParser):
    """What a page loads: script sources, stylesheets, image sources, and the text of the table headers."""

    def __init__(self):
        super().__init__()
        self.scripts, self.links, self.imgs, self.th, self._in_th = [], [], [], [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        if tag == "link":
            self.links.append(a.get("href"))
        if tag == "img":
            self.imgs.append(a.get("src"))
        self._in_th = tag == "th"

    def handle_data(self, data):
        if self._in_th and data.strip():
            self.th.append(data.strip())

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th = False


def _items_of(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    m = re.search(r"window\.RADAR_ITEMS = (\{.*?\});\n?</script>", text, re.S)
    if m is None:
        side = (page.parent / report_html.ITEMS_FILE).read_text(encoding="utf-8")
        m = re.fullmatch(r"window\.RADAR_ITEMS = (\{.*\});\n", side, re.S)
    return json.loads(m.group(1))


def write_page(folders: list[Path], out: Path, extra: dict | None = None) -> Path:
    """report.html alone (no matplotlib figures: a second or two) from the same content write_report uses."""
    from radar_tasks.analysis.runs import load_runs

    runs = load_runs(folders, labels=[{"step": s, "label": f"step_{s}"} for s in STEPS])
    tables = report.analyse(runs, bootstrap_iters=20)
    out.mkdir(parents=True, exist_ok=True)
    context = report.report_context(runs, tables, {}, {}, out, "RADAR report", 20, 0)
    return report_html.write_html(runs, tables, {**context, **(extra or {})}, {}, out)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The synthetic runs and their report (HTML included): (report folder, run folders, records by item)."""
    root = tmp_path_factory.mktemp("html")
    folders, records = write_runs(root)
    out = root / "report"
    report.write_report(folders, out, labels=[{"step": s, "label": f"step_{s}"} for s in STEPS], bootstrap_iters=50)
    return out, folders, records


def test_the_page_is_self_contained_and_holds_every_table_of_report_md(written):
    out, _, _ = written
    page = out / report_html.HTML_FILE
    scan = _Scan()
    scan.feed(page.read_text(encoding="utf-8"))
    assert scan.scripts == [] and scan.links == []  # everything inline: no network, no side file at this size
    assert scan.imgs and all(src.startswith("data:image/png;base64,") for src in scan.imgs)  # other PNG figures
    assert not (out / report_html.ITEMS_FILE).exists()
    md = (out / "report.md").read_text(encoding="utf-8")
    for header_line in re.findall(r"^\| (.+) \|\n\|(?:---\|?)+$", md, re.M):
        for cell in header_line.split(" | "):
            assert cell.replace("\\|", "|") in scan.th, cell
    assert page.stat().st_size < 8_000_000  # the bound docs/analysis.md states for the demo series


def test_the_drill_down_has_every_item_with_its_probabilities_and_learned_checkpoint(written):
    out, _, records = written
    data = _items_of(out / report_html.HTML_FILE)
    assert [r["label"] for r in data["runs"]] == [f"step_{s}" for s in STEPS]
    items = {(it["task"], it["id"]): it for it in data["items"]}
    assert items.keys() == records.keys()
    for key, per_run in records.items():
        it = items[key]
        for r, rec in enumerate(per_run):
            if rec is None:
                assert it["p"][r] is None and it["ok"][r] is None
            elif rec["scores"] is None:
                assert it["p"][r] is None and it["ok"][r] == 0
            else:
                assert it["p"][r] == pytest.approx(_softmax(rec["scores"]).tolist(), abs=1e-4)
                assert it["ok"][r] == int(rec["correct"])
        correct = [None if rec is None else bool(rec["correct"]) for rec in per_run]
        assert it["learned"] == [learned_by_hand(correct)]
        first = next(rec for rec in per_run if rec)
        assert it["c"] == first["candidates"] and it["q"] == first["prompt"]
    # images: each file once, embedded as a thumbnail of at most THUMB_SIDE pixels
    assert data["images"]["mode"] == "embedded" and len(data["srcs"]) == 4
    import base64
    import io

    for src in data["srcs"]:
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert max(im.size) <= drilldown.THUMB_SIDE


def test_many_images_are_linked_and_a_large_drill_down_goes_to_a_side_file(written, tmp_path, monkeypatch):
    _, folders, _ = written
    monkeypatch.setattr(drilldown, "MAX_EMBEDDED_IMAGES", 3)
    monkeypatch.setattr(report_html, "INLINE_ITEMS_LIMIT", 1000)
    out = tmp_path / "r"
    write_page(folders, out)
    scan = _Scan()
    scan.feed((out / report_html.HTML_FILE).read_text(encoding="utf-8"))
    assert scan.scripts == [report_html.ITEMS_FILE]
    data = _items_of(out / report_html.HTML_FILE)
    assert data["images"]["mode"] == "linked"
    targets = {os.path.normpath(out / src) for src in data["srcs"]}
    assert targets == {str(folders[0].parent.parent / "data" / f"img{k}.png") for k in range(4)}
    # smaller again: the side file goes
    monkeypatch.setattr(report_html, "INLINE_ITEMS_LIMIT", 10**9)
    write_page(folders, out)
    assert not (out / report_html.ITEMS_FILE).exists()


def test_tables_and_metrics_added_later_show_up_without_edits(written, tmp_path):
    from radar_tasks.analysis import interactive

    _, folders, _ = written
    extra = {"visual_gain_table": {"header": ["run", "gain"], "rows": [["step_100", "0.123"]]}}
    text = write_page(folders, tmp_path / "r", extra).read_text(encoding="utf-8")
    assert ">Visual gain</h3>" in text and "<td>0.123</td>" in text
    # a metric the summary gains gets its curves and heatmap
    runs = __import__("radar_tasks.analysis.runs", fromlist=["load_runs"]).load_runs(folders)
    tables = report.analyse(runs, bootstrap_iters=10)
    extra = [dict(r, metric="bpb", value=1.5 - r["value"]) for r in tables["summary"] if r["metric"] == "sds"]
    tables["summary"] = tables["summary"] + extra
    names = set(interactive.catalogue(tables))
    assert {"development_bpb_ability", "development_bpb_subset", "heatmap_bpb"} <= names


# ------------------------------------------------------------------------------------------------ in a browser


def _chromium() -> str | None:
    return os.environ.get("RADAR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    if exe is None:
        pytest.skip(
            "headless Chromium not found: apt-get install chromium (or set RADAR_CHROMIUM); README 'Run the tests'"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason='Playwright not installed: pip install -e ".[test]"')
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, page_path: Path):
    """A page on report.html with every console error and uncaught exception collected."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.goto(page_path.as_uri())
    page.wait_for_load_state("load")
    return page, errors


def test_the_side_file_loads_from_file_urls_and_flips_and_candidates_are_right(written, browser, tmp_path, monkeypatch):
    _, folders, records = written
    monkeypatch.setattr(report_html, "INLINE_ITEMS_LIMIT", 0)  # the drill-down in report-items.js
    page, errors = _open(browser, write_page(folders, tmp_path / "r"))
    assert page.locator("#items-count").inner_text() == f"{len(records)} of {len(records)} items"
    # flips between the first and the last checkpoint, counted here from the logs
    gained = [k for k, v in records.items() if v[0] and v[-1] and not v[0]["correct"] and v[-1]["correct"]]
    lost = [k for k, v in records.items() if v[0] and v[-1] and v[0]["correct"] and not v[-1]["correct"]]
    assert page.locator("#flips-gained-count").inner_text() == str(len(gained))
    assert page.locator("#flips-lost-count").inner_text() == str(len(lost))
    # filter by text, open the item, read its candidates' probabilities
    key = ("radar_spatial", "spatial-1")
    page.fill("#items-search", "spatial-1")
    page.locator("tr.item-row").first.click()
    rows = page.locator("#item-candidates tbody tr")
    per_run = records[key]
    assert rows.count() == len(per_run[0]["candidates"])
    for k, candidate in enumerate(per_run[0]["candidates"]):
        cells = rows.nth(k).locator("td").all_inner_texts()
        assert cells[0].startswith(candidate)  # shown as text, not markup
        want = [float(_softmax(rec["scores"])[k]) for rec in per_run]
        assert [float(c) for c in cells[1:]] == pytest.approx(want, abs=6e-4)  # shown to 3 decimals
    learned = learned_by_hand([rec["correct"] for rec in per_run])
    expected = (
        f"Answered correctly from step_{STEPS[learned]} on."
        if learned is not None
        else f"Not answered correctly at the last checkpoint (step_{STEPS[-1]})."
    )
    assert page.locator("#item-learned").inner_text() == expected
    assert page.locator("#item-detail .detail-images img").count() == 2
    assert errors == []


@pytest.mark.slow
def test_the_demo_sweeps_page_in_chromium(tiny_sweep, browser, tmp_path):
    """report.html of the three-checkpoint sweep, as the sweep wrote it: no console error, the curves drawn, an
    item's candidates shown; a screenshot under the test's temp folder."""
    out, _, _ = tiny_sweep
    page_path = out / "report" / report_html.HTML_FILE
    assert page_path.stat().st_size < 8_000_000
    page, errors = _open(browser, page_path)
    curves = page.locator("#curves .js-plotly-plot")
    assert curves.count() >= 2
    assert page.locator("#curves .js-plotly-plot .scatterlayer .trace path.js-line").count() >= 3  # lines drawn
    assert page.locator("#radar .js-plotly-plot").count() == 0  # two subsets: no radar chart (needs three)
    assert page.locator("#heatmaps .js-plotly-plot .hm image").count() >= 1
    first = page.locator("tr.item-row").first
    item_id = first.locator("td").first.inner_text()
    first.click()
    candidates = page.locator("#item-candidates tbody tr.candidate")
    assert candidates.count() >= 2
    # the item's candidates as the per-item log has them
    logs = sorted(out.glob("runs/step_100/*/*_samples_*.jsonl"))
    logged = [json.loads(line)["sds"] for path in logs for line in path.read_text().splitlines() if line.strip()]
    record = next(r for r in logged if str(r["id"]) == item_id)
    shown = [c.split(" (correct)")[0] for c in candidates.locator("td:first-child").all_inner_texts()]
    assert shown == record["candidates"]
    assert page.locator("#item-chart.js-plotly-plot .scatterlayer .trace").count() == len(record["candidates"]) + 1
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert errors == []

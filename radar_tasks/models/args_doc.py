"""The table of docs/model-args.md, generated from the declaration of radar_hf's model args (`args.ModelArgs`) and
the protocol presets (`protocol.PAPER_PRESETS`): `python -m radar_tasks.models.args_doc` rewrites it between the
page's markers, `--check` exits 1 when the page differs (tests/test_model_args.py checks it too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from radar_tasks.models import protocol
from radar_tasks.models.args import MODEL_ARGS, Arg

PAGE = Path(__file__).resolve().parents[2] / "docs" / "model-args.md"
START, END = "<!-- model-args:start -->", "<!-- model-args:end -->"


def _value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def paper_values(name: str) -> dict[str, list[str]]:
    """What `protocol=paper` sets `name` to where that is not its default: value (as shown) -> the styles it is set
    for (`*` for every style, a family's or not)."""
    if name == "prompt_style":
        return {_value(protocol.PAPER_STYLE): ["*"]}
    default = MODEL_ARGS[name].default
    styles = [*protocol.PAPER_PRESETS, "raw"]  # the families' presets, and the one of a style without a script
    found: dict[str, list[str]] = {}
    for style in styles:
        value = protocol.paper_preset(style).get(name, default)
        if value != default:
            found.setdefault(_value(value), []).append(style)
    return {value: ["*"] if set(found_for) == set(styles) else found_for for value, found_for in found.items()}


def default_cell(spec: Arg) -> str:
    shown = spec.shown_default or _value(spec.default)
    paper = [
        value if styles == ["*"] else f"{value} ({', '.join(styles)})"
        for value, styles in paper_values(spec.name).items()
    ]
    return f"{shown}; `protocol=paper`: {', '.join(paper)}" if paper else shown


def meaning_cell(spec: Arg) -> str:
    flag = f" (also lmms-eval's `{spec.cli_flag}`)" if spec.cli_flag else ""
    switch = " A `protocol=paper` switch." if spec.switch else ""
    return f"{spec.doc}{flag}.{switch}"


def table() -> str:
    """The page's text between the markers: the model-args table and the styles `auto` picks."""
    rows = ["| model arg | values | default | meaning |", "|---|---|---|---|"]
    for spec in MODEL_ARGS.values():
        rows.append(f"| `{spec.name}` | {spec.valid} | {default_cell(spec)} | {meaning_cell(spec)} |")
    by_style: dict[str, list[str]] = {}
    for model_type, style in protocol.MODEL_TYPE_STYLES.items():
        by_style.setdefault(style, []).append(f"`{model_type}`")
    picks = "; ".join(f"{', '.join(types)} -> `{style}`" for style, types in by_style.items())
    return "\n".join(
        [
            *rows,
            "",
            f"`prompt_style=auto` picks the style by the checkpoint's `config.model_type`: {picks}; any other -> "
            "`raw`. The family styles are those of the reference scripts (docs/REFERENCE.md).",
        ]
    )


def between_markers(text: str) -> str:
    """The page's generated part (without the markers' lines)."""
    start, end = text.index(START) + len(START), text.index(END)
    return text[start:end].strip("\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="docs/model-args.md's table from radar_hf's model-arg declaration")
    parser.add_argument("--check", action="store_true", help="exit 1 when the page's table is not the generated one")
    check = parser.parse_args(argv).check
    text = PAGE.read_text(encoding="utf-8")
    if between_markers(text) == table():
        return 0
    if check:
        print(f"{PAGE}: the model-args table differs from the declaration; run python -m radar_tasks.models.args_doc")
        return 1
    start, end = text.index(START) + len(START), text.index(END)
    PAGE.write_text(f"{text[:start]}\n{table()}\n{text[end:]}", encoding="utf-8")
    print(f"{PAGE}: table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The documentation stays true to the code, without running anything slow.

- Every relative link of README.md, task_yamls/README.md, benchmarks/README.md and docs/*.md resolves: the file
  exists, and an `#anchor` is one of its headings (GitHub's heading ids).
- Every command in the README's shell blocks is checked: `radar-tasks ...` through the CLI's own parser (the real
  arguments, not only `--help`); `lmms-eval ...` against lmms-eval 0.7.3's own flags, our task folder, and radar_hf's
  model-arg check (all but the existence of `pretrained`); `pip`, `python -m pytest`, `ruff` and `export` lines by
  their shape. A command of a kind no checker knows fails: add a checker with the command.
- The docs pages' `radar-tasks` and `lmms-eval` commands, their `python <script>` paths, their python blocks and the
  `!function` hooks their YAML blocks name are checked the same way.

No lmms-eval subprocess, and lmms-eval's CLI module is not imported (~17 s): its flags are read from its source.
Markdown is parsed with markdown-it-py (CommonMark; installed with transformers, through typer and rich).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib.metadata
import importlib.util
import io
import re
import shlex
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest
from markdown_it import MarkdownIt
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PAGES = [README, REPO / "task_yamls" / "README.md", REPO / "benchmarks" / "README.md", *sorted(REPO.glob("docs/*.md"))]
TASK_DIR = REPO / "task_yamls"
SHELL_FENCES = {"bash", "sh", "shell", "console"}
README_MAX_LINES = 200  # issue 22: the README is the short entry; the rest lives in docs/


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


# ------------------------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------------------------


@functools.cache
def tokens(page: Path) -> list:
    return MarkdownIt("commonmark").enable("table").parse(page.read_text(encoding="utf-8"))


def links(page: Path) -> list[str]:
    return [
        child.attrGet("href") or child.attrGet("src")
        for token in tokens(page)
        if token.type == "inline"
        for child in token.children
        if child.type in ("link_open", "image")
    ]


def slug(heading: str) -> str:
    """GitHub's id of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@functools.cache
def anchors(page: Path) -> frozenset[str]:
    """The ids of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: Counter[str] = Counter()
    out = set()
    page_tokens = tokens(page)
    for i, token in enumerate(page_tokens):
        if token.type == "heading_open":
            text = "".join(c.content for c in page_tokens[i + 1].children if c.type in ("text", "code_inline"))
            base = slug(text)
            out.add(base if not seen[base] else f"{base}-{seen[base]}")
            seen[base] += 1
    return frozenset(out)


def fences(page: Path, languages: set[str]) -> list[str]:
    return [t.content for t in tokens(page) if t.type == "fence" and t.info.strip() in languages]


def commands(page: Path) -> list[list[str]]:
    """Each command of a page's shell blocks as argv: continued lines joined, comments dropped, split at `&&`,
    leading `VAR=value` assignments dropped."""
    out = []
    for block in fences(page, SHELL_FENCES):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                argv, words = words[:cut], words[cut + 1 :]
                while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):
                    argv = argv[1:]
                if argv:
                    out.append(argv)
    return out


# ------------------------------------------------------------------------------------------------------------------
# Links
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_resolve(page):
    broken = []
    for href in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", href):  # https:, mailto:
            continue
        target, _, anchor = href.partition("#")
        path = (page.parent / unquote(target)).resolve() if target else page
        if not path.exists():
            broken.append(f"{href}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{href}: no heading #{anchor} in {path.relative_to(REPO)}")
    assert not broken, f"{page_id(page)}: broken links: {broken}"


def test_the_readme_links_every_page():
    linked = {(README.parent / unquote(h.partition("#")[0])).resolve() for h in links(README) if "://" not in h}
    missing = [page_id(p) for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"README.md links no page of: {missing}"


def test_the_readme_is_the_short_entry():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move the detail into docs/"


def test_both_readmes_cite_the_paper_alike():
    citations = [fences(page, {"bibtex"}) for page in (README, TASK_DIR / "README.md")]
    assert citations[0] == citations[1] and len(citations[0]) == 1
    assert "journal={arXiv preprint arXiv:2602.12892}" in citations[0][0]
    assert citations[0][0].lstrip().startswith("@article{")


# ------------------------------------------------------------------------------------------------------------------
# Command checkers: each raises AssertionError naming the command
# ------------------------------------------------------------------------------------------------------------------


def parse(parser: argparse.ArgumentParser, argv: list[str], command: str) -> argparse.Namespace:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parser.parse_args(argv)
    except SystemExit:
        raise AssertionError(f"`{command}`: {stderr.getvalue().strip().splitlines()[-1]}") from None


def check_radar_tasks(argv: list[str], command: str, checkpoint: Path) -> None:
    from radar_tasks.cli import build_parser

    parse(build_parser(), argv[1:], command)


@functools.cache
def lmms_eval_parser() -> argparse.ArgumentParser:
    """lmms-eval's CLI flags, rebuilt from the `add_argument` calls of `parse_eval_args` in its __main__.py (flag
    names, store_true actions, choices, nargs; values stay strings)."""
    folder = importlib.util.find_spec("lmms_eval").submodule_search_locations[0]
    tree = ast.parse(Path(folder, "__main__.py").read_text(encoding="utf-8"))
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "parse_eval_args")
    parser = argparse.ArgumentParser(prog="lmms-eval")
    for call in ast.walk(function):
        if isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "add_argument":
            flags = [a.value for a in call.args if isinstance(a, ast.Constant)]
            kept = ("action", "nargs", "choices")
            options = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in kept}
            parser.add_argument(*flags, **options)
    known = {s for action in parser._actions for s in action.option_strings}
    assert {"--model", "--model_args", "--tasks", "--output_path", "--log_samples", "--include_path"} <= known
    return parser


@functools.cache
def our_tasks() -> frozenset[str]:
    """The task and group names of our task folder: each generated YAML declares the name it is filed under."""
    names = set()
    for path in TASK_DIR.glob("radar_*.yaml"):
        assert re.search(rf"^(task|group): {path.stem}$", path.read_text(encoding="utf-8"), re.M), path
        names.add(path.stem)
    return frozenset(names)


def lmms_eval_args(argv: list[str]) -> list[str] | None:
    """The lmms-eval arguments of `lmms-eval ...` or of `... -m lmms_eval ...` (python, accelerate, torchrun)."""
    if argv[0] == "lmms-eval":
        return argv[1:]
    for i in range(len(argv) - 1):
        if argv[i : i + 2] == ["-m", "lmms_eval"]:
            return argv[i + 2 :]
    return None


def check_lmms_eval(argv: list[str], command: str, checkpoint: Path) -> None:
    from lmms_eval.utils import simple_parse_args_string

    from radar_tasks.models.args import check_model_args

    args = lmms_eval_args(argv)
    if args and args[-1] == "...":  # "and the rest": an elided tail
        args = args[:-1]
    ns = parse(lmms_eval_parser(), args, command)
    assert ns.tasks, f"`{command}`: no --tasks"
    unknown = [t for t in ns.tasks.split(",") if t not in our_tasks()]
    assert not unknown, f"`{command}`: no such task or group in task_yamls/: {unknown}"
    if ns.model == "radar_hf" and ns.model_args and "..." not in ns.model_args:
        model_args = simple_parse_args_string(ns.model_args)
        if "pretrained" in model_args:  # its existence is the reader's machine's business
            model_args["pretrained"] = str(checkpoint)
        try:
            check_model_args(model_args, {"batch_size": ns.batch_size, "device": ns.device})
        except Exception as exc:
            raise AssertionError(f"`{command}`: {exc}") from None


def check_pip(argv: list[str], command: str, checkpoint: Path) -> None:
    """`pip install` of this project (`.`, `.[extra]`), of one of its dependencies, with -e / -q / --index-url."""
    metadata = importlib.metadata.metadata("radar-tasks")  # pyproject.toml, as installed
    extras = set(metadata.get_all("Provides-Extra") or [])
    dependencies = {canonicalize_name(Requirement(r).name) for r in metadata.get_all("Requires-Dist")}
    assert argv[:2] == ["pip", "install"], f"`{command}`: not a pip install"
    words = iter(argv[2:])
    for word in words:
        if word == "--index-url":
            assert next(words, "").startswith("https://"), f"`{command}`: --index-url takes an https URL"
        elif word in ("-e", "--editable", "-q"):
            continue
        elif word.startswith("."):
            found = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", word)
            assert found, f"`{command}`: {word}: expected . or .[extra]"
            assert set(filter(None, (found.group(1) or "").split(","))) <= extras, f"`{command}`: extras: {extras}"
        else:
            assert canonicalize_name(word) in dependencies, f"`{command}`: {word} is none of the project's dependencies"


def check_python(argv: list[str], command: str, checkpoint: Path, markers: set[str]) -> None:
    """`python -m pytest` with -q / -x / -n <workers> / -m <registered markers> / tests/ paths; `python -m <a module
    of this package>`; `python <script>` of this repo."""
    if argv[1:2] == ["-m"] and argv[2:3] != ["pytest"]:
        module = argv[2] if len(argv) > 2 else ""
        assert module.startswith("radar_tasks.") and importlib.util.find_spec(module), f"`{command}`: no module"
        return
    if argv[1:3] != ["-m", "pytest"]:
        assert len(argv) > 1 and (REPO / argv[1]).is_file(), f"`{command}`: no script {argv[1:2]} in the repository"
        return
    words = iter(argv[3:])
    for word in words:
        if word == "-n":  # pytest-xdist's workers
            count = next(words, "")
            assert count == "auto" or count.isdigit(), f"`{command}`: -n {count}"
            assert importlib.util.find_spec("xdist"), f"`{command}`: pytest-xdist is not installed"
        elif word == "-m":
            expression = next(words, "")
            used = set(re.findall(r"\w+", expression)) - {"and", "or", "not"}
            assert expression and used <= markers, f"`{command}`: unregistered markers {used - markers}"
        else:
            assert word in ("-q", "-x") or (REPO / word.split("::")[0]).exists(), f"`{command}`: {word}"


def check_shape(argv: list[str], command: str, checkpoint: Path) -> None:
    """The lint lines CI runs, and `export NAME=value`."""
    if argv[0] == "export":
        assert len(argv) == 2 and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S+", argv[1]), f"`{command}`"
    else:
        assert argv in (["ruff", "check", "."], ["ruff", "format", "--check", "."]), f"`{command}`: not CI's lint"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A folder that passes as `pretrained` (a config.json): the checkpoint a command names is not on this machine."""
    folder = tmp_path_factory.mktemp("checkpoint")
    (folder / "config.json").write_text("{}")
    return folder


# ------------------------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------------------------


def test_every_readme_command_is_checked(checkpoint, pytestconfig):
    markers = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    checkers = {
        "radar-tasks": check_radar_tasks,
        "lmms-eval": check_lmms_eval,
        "pip": check_pip,
        "python": functools.partial(check_python, markers=markers),
        "ruff": check_shape,
        "export": check_shape,
    }
    seen = Counter()
    for argv in commands(README):
        command = shlex.join(argv)
        assert argv[0] in checkers, f"README.md: `{command}`: no checker for {argv[0]} in tests/test_docs.py"
        checkers[argv[0]](argv, command, checkpoint)
        seen[argv[0]] += 1
    assert seen["radar-tasks"] >= 4 and seen["lmms-eval"] >= 3 and seen["python"] >= 2, seen


@pytest.mark.parametrize("page", PAGES[1:], ids=page_id)
def test_docs_commands_parse(page, checkpoint, pytestconfig):
    markers = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    for argv in commands(page):
        command = shlex.join(argv)
        if argv[0] == "radar-tasks":
            check_radar_tasks(argv, command, checkpoint)
        elif lmms_eval_args(argv) is not None:
            check_lmms_eval(argv, command, checkpoint)
        elif argv[0] == "python" and argv[1:2] != ["-c"]:
            check_python(argv, command, checkpoint, markers)


def test_the_readme_shows_what_ci_runs():
    """`.ci/run`'s lint and test lines are README commands, word for word."""
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    ci = [line for line in lines if line.startswith(("ruff", "python -m pytest"))]
    assert ci, ".ci/run: no lint or test line found"
    shown = [shlex.join(argv) for argv in commands(README)]
    for line in ci:
        for part in line.split("&&"):
            assert shlex.join(shlex.split(part)) in shown, f"README.md does not show CI's `{part.strip()}`"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_blocks_parse(page):
    for block in fences(page, {"python"}):
        ast.parse(block)


def _defines(module: str, name: str) -> bool:
    """Whether a module's source defines `name` at top level (read, not imported)."""
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_yaml_blocks_name_existing_hooks(page):
    for block in fences(page, {"yaml"}):
        for dotted in re.findall(r"!function\s+([\w.]+)", block):
            module, _, name = dotted.rpartition(".")
            assert _defines(module, name), f"{page_id(page)}: !function {dotted}: not defined"

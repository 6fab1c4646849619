"""The documentation says what the code does: README.md and docs/*.md.

* every ``apis …`` command line they show (in a shell block, or as inline code in the prose) names a command
  that exists in the typer app, and every ``--option`` it uses is an option of that command;
* every relative link and image resolves to a file, and every ``#anchor`` to a heading of its file;
* docs/configuration.md is exactly what :mod:`apis.config_doc` generates from the config dataclasses.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main

from apis import config_doc
from apis.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Options ``apis`` accepts anywhere on the line (``apis.cli.main`` takes --debug out before typer sees it).
GLOBAL_OPTIONS = {"--help", "--debug"}
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
#: Where a shell line stops being the apis command: pipes, lists, redirections.
SHELL_BREAKS = {"|", "||", "&&", ";", ">", ">>", "<", "2>", "&"}


@dataclass(frozen=True)
class Line:
    """A piece of a Markdown file: its text and the 1-based line it starts on."""

    text: str
    lineno: int


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every ``` fenced block."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^\s*```+\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not re.match(r"^\s*```+\s*$", lines[j]):
            j += 1
        out.append((m.group(1).lower(), i + 2, lines[i + 1:j]))
        i = j + 1
    return out


def prose(text: str) -> list[Line]:
    """The lines outside fenced blocks, numbered."""
    keep, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*```", line):
            fenced = not fenced
            continue
        if not fenced:
            keep.append(Line(line, n))
    return keep


def shell_lines(lines: list[str], first: int) -> list[Line]:
    """Logical lines of a shell block (backslash continuations joined), skipping heredoc bodies."""
    out: list[Line] = []
    buf, start, heredoc = "", first, None
    for n, raw in enumerate(lines, first):
        if heredoc is not None:
            if raw.strip() == heredoc:
                heredoc = None
            continue
        if not buf:
            start = n
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        buf += raw
        m = re.search(r"<<-?\s*'?\"?(\w+)", buf)
        if m:
            heredoc = m.group(1)
        out.append(Line(buf, start))
        buf = ""
    if buf:
        out.append(Line(buf, start))
    return out


def apis_commands(path: Path) -> list[Line]:
    """Every apis command line of a Markdown file: from shell blocks, and inline code that starts with ``apis ``."""
    text = path.read_text()
    found: list[Line] = []
    for lang, first, lines in fenced_blocks(text):
        if lang not in SHELL_FENCES:
            continue
        for line in shell_lines(lines, first):
            tokens = _tokens(line.text)
            for k, tok in enumerate(tokens):
                if tok in ("apis", ".venv/bin/apis"):  # also `torchrun … -m apis run …`
                    found.append(Line(" ".join(tokens[k:]), line.lineno))
                    break
    for line in prose(text):
        for span in re.findall(r"`([^`]+)`", line.text):
            if span.startswith("apis ") or span == "apis":
                found.append(Line(span, line.lineno))
    return found


def _tokens(text: str) -> list[str]:
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote in prose: whitespace is enough to find the options
        tokens = text.split("#")[0].split()
    for k, tok in enumerate(tokens):
        if tok in SHELL_BREAKS:
            return tokens[:k]
    return tokens


def check_command(line: str, root) -> str | None:
    """None when ``line`` (``apis …``) names an existing command and only its options; else what is wrong.
    ``root``: the app's command (``typer.main.get_command``); typer bundles its own click, so groups and options
    are told by what they have (``commands``; ``param_type_name``), not by click's classes."""
    tokens = _tokens(line)[1:]
    cmd = root
    path = ["apis"]
    while hasattr(cmd, "commands") and tokens and not tokens[0].startswith("-"):
        name = tokens.pop(0)
        sub = cmd.commands.get(name)
        if sub is None:
            return f"`{' '.join(path)}` has no command {name!r} (it has: {', '.join(sorted(cmd.commands))})"
        cmd, path = sub, [*path, name]
    known = set(GLOBAL_OPTIONS)
    for param in cmd.params:
        if param.param_type_name == "option":
            known.update(param.opts)
            known.update(param.secondary_opts)
    for tok in tokens:
        if tok.startswith("--") and len(tok) > 2:
            option = tok.split("=", 1)[0]
            if option not in known:
                return f"`{' '.join(path)}` has no option {option}"
    return None


def command_problems(path: Path, root) -> list[str]:
    rel = path.relative_to(ROOT)
    return [f"{rel}:{c.lineno}: {problem}  [{c.text}]" for c in apis_commands(path)
            if (problem := check_command(c.text, root)) is not None]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: markup and punctuation dropped, lower case, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link keeps its text
    text = text.lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(path.read_text()):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line.text)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def link_problems(path: Path, root: Path = ROOT) -> list[str]:
    rel = path.relative_to(root)
    problems = []
    for line in prose(path.read_text()):
        text = re.sub(r"`[^`]*`", "", line.text)  # a link inside inline code is not a link
        for target in re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                problems.append(f"{rel}:{line.lineno}: link to {target}: {file} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{rel}:{line.lineno}: link to {target}: {dest.name} has no heading #{anchor}")
    return problems


@pytest.fixture(scope="module")
def root():
    return typer.main.get_command(app)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_apis_command_exists_with_its_options(path: Path, root):
    problems = command_problems(path, root)
    assert not problems, "commands the CLI does not have:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path):
    problems = link_problems(path)
    assert not problems, "\n".join(problems)


def test_the_docs_show_commands_at_all():
    # The README's quick start and commands at a glance: the checker must find them, or it checks nothing.
    lines = [c.text for c in apis_commands(ROOT / "README.md")]
    assert any(t.startswith("apis data import") for t in lines)
    assert any(t.startswith("apis export masks") for t in lines)
    assert len(lines) >= 20


def test_the_command_checker_catches_what_it_should(root):
    assert check_command("apis run myrun --strategy entropy --steps 3 --debug", root) is None
    assert check_command("apis queue export myproject review.csv --review-step 3", root) is None
    assert "no command 'bogus'" in check_command("apis data bogus x", root)
    assert "no option --stpes" in check_command("apis run myrun --stpes 3", root)
    assert "no option --strategy" in check_command("apis compare out --strategy entropy", root)


def test_commands_are_found_in_blocks_inline_and_under_torchrun(tmp_path: Path, root):
    doc = tmp_path / "x.md"
    doc.write_text("Run `apis budget proj --bogus` now.\n\n```bash\n"
                   "torchrun --nproc-per-node 4 -m apis train out/ \\\n    --preset coco --supervision masks\n"
                   "cat > my.yaml <<'YAML'\napis: not a command\nYAML\n"
                   "apis data check a.json | head  # a comment --not-an-option\n```\n")
    found = [(c.lineno, c.text) for c in apis_commands(doc)]
    assert found == [(4, "apis train out/ --preset coco --supervision masks"), (9, "apis data check a.json"),
                     (1, "apis budget proj --bogus")]
    assert [check_command(t, root) is None for _, t in found] == [True, True, False]


def test_the_link_checker_catches_a_missing_file_and_anchor(tmp_path: Path):
    (tmp_path / "a.md").write_text("# Top\n\n## The `loop` (LoopConfig)\n\nSee [b](b.md), [here](#the-loop-loopconfig),"
                                   " [gone](#nowhere), `[not a link](c.md)` and [web](https://example.org).\n")
    (tmp_path / "b.md").write_text("# B\n")
    problems = link_problems(tmp_path / "a.md", tmp_path)
    assert len(problems) == 1 and "#nowhere" in problems[0]
    (tmp_path / "b.md").unlink()
    assert len(link_problems(tmp_path / "a.md", tmp_path)) == 2


def test_the_configuration_reference_is_generated():
    path = ROOT / "docs" / "configuration.md"
    assert path.read_text() == config_doc.render(), (
        "docs/configuration.md differs from the config dataclasses: "
        "run python -m apis.config_doc docs/configuration.md")


def test_the_configuration_reference_names_every_key():
    text = config_doc.render()
    for section in config_doc.sections():
        for key in section.keys:
            assert f"| `{key.path}` |" in text
    # Spot checks: a comment above a field, one beside it, and the two presets' values.
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| `")}
    assert "GrabCut where the answers trust the colours" in rows["| `loop.refine_masks`"]
    assert "overrides the model's weight for this schedule" in rows["| `finetune.point_loss_weight`"]
    assert "| `[60000, 80000]` |" in rows["| `initial.decay_at`"] and "| `[450]` |" in rows["| `initial.decay_at`"]

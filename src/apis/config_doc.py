"""The configuration reference, docs/configuration.md, generated from the run config's dataclasses.

Every key a run config YAML may hold is a field of :class:`apis.config.RunConfig` or of a dataclass nested in it
(the model, the two schedules, the backbone, the loop, the cost model). The reference shows each key with its
type, its value in the ``tiny`` and ``coco`` presets and its meaning: the comment above or beside the field in
the source, so the words live next to the code they describe. Each section opens with its class's docstring.

``tests/test_docs.py`` regenerates the text and fails when docs/configuration.md differs from it; after changing
a config field or its comment, rewrite the file with::

    python -m apis.config_doc docs/configuration.md
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
from pathlib import Path
from typing import Any

from apis.atomic import write_text_atomic
from apis.config import DEMO_OVERRIDES, RunConfig, preset

PRESETS = ("tiny", "coco")


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key: its dotted path (``loop.review.per_step``), its type as written in the source, its value
    in each preset of :data:`PRESETS` and the field's comment (empty when the source gives none)."""

    path: str
    type: str
    values: tuple[Any, ...]
    meaning: str


@dataclasses.dataclass(frozen=True)
class Section:
    """The keys of one dataclass (``path`` empty for the top level) and the class's docstring."""

    path: str
    cls: type
    doc: str
    keys: tuple[Key, ...]


def field_comments(cls: type) -> dict[str, str]:
    """Field name → its comment in the class's source: the run of ``#`` lines right above the field (no blank
    line between) followed by the comment at the end of the field's own line(s). Fields without one are left
    out."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments: dict[int, str] = {}  # 1-based line → comment text
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    out: dict[str, str] = {}
    body = ast.parse(source).body[0]
    for node in getattr(body, "body", []):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        line = node.lineno - 1
        while line >= 1 and line in comments and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        beside = [comments[n] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)
                  if n in comments and not lines[n - 1].lstrip().startswith("#")]
        text = " ".join(above + beside).strip()
        if text:
            out[node.target.id] = text
    return out


def field_types(cls: type) -> dict[str, str]:
    """Field name → its annotation as written in the source (``str | None``)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    return {node.target.id: ast.unparse(node.annotation) for node in getattr(body, "body", [])
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}


def class_docstring(cls: type) -> str:
    """The docstring written in the class's source, as Markdown; empty when it has none (a dataclass without one
    gets its signature as ``__doc__``, which is no explanation)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    doc = ast.get_docstring(body) if isinstance(body, ast.ClassDef) else None
    return markdown(" ".join((doc or "").split()))


def markdown(text: str) -> str:
    """reStructuredText's inline markup of the docstrings as Markdown: ``x`` and :class:`x` become `x`."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def sections(configs: tuple[RunConfig, ...] | None = None) -> list[Section]:
    """The reference's sections, top level first, then each nested dataclass in field order (depth first)."""
    configs = configs if configs is not None else tuple(preset(name) for name in PRESETS)
    out: list[Section] = []

    def walk(objs: tuple[Any, ...], path: str, intro: str) -> None:
        cls = type(objs[0])
        comments, types = field_comments(cls), field_types(cls)
        keys, nested = [], []
        for f in dataclasses.fields(cls):
            values = tuple(getattr(o, f.name) for o in objs)
            full = f"{path}.{f.name}" if path else f.name
            if dataclasses.is_dataclass(values[0]):  # a section of its own, introduced by the field's comment
                nested.append((values, full, comments.get(f.name, "")))
            else:
                keys.append(Key(full, types.get(f.name, ""), values, comments.get(f.name, "")))
        doc = " ".join(t for t in (_sentence(markdown(intro)), class_docstring(cls)) if t)
        out.append(Section(path, cls, doc, tuple(keys)))
        for values, full, comment in nested:
            walk(values, full, comment)

    walk(configs, "", "")
    return out


def _sentence(text: str) -> str:
    """A field comment as the opening sentence of its section: capitalised, with a full stop."""
    text = text.strip()
    if not text:
        return ""
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def yaml_value(value: Any) -> str:
    """A value as it would be written in a run config YAML (flow style): ``[random, entropy]``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value else '""'
    return repr(value)


def _cell(text: str) -> str:
    # A pipe inside a table cell would end the cell, also inside a code span.
    return text.replace("|", "\\|")


def render(configs: tuple[RunConfig, ...] | None = None) -> str:
    """The whole of docs/configuration.md."""
    demo = ", ".join(f"`{k}: {yaml_value(v)}`" if not isinstance(v, dict) else
                     f"`{k}: {{{', '.join(f'{a}: {yaml_value(b)}' for a, b in v.items())}}}`"
                     for k, v in DEMO_OVERRIDES.items())
    parts = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m apis.config_doc docs/configuration.md` from the dataclasses of "
        "src/apis/config.py and the ones they nest; edit the comments in the source, not this file "
        "(tests/test_docs.py fails when they differ). -->",
        "",
        "A run config is a YAML file that names a preset and overrides any key below; a key it does not name keeps "
        "the preset's value, and an unknown key or a value of the wrong type is an error that names the key and "
        "the file. Nested keys are written as nested mappings: `loop.review.per_step` is",
        "",
        "```yaml",
        "preset: tiny",
        "loop: {review: {per_step: 108}}",
        "```",
        "",
        "The presets: `tiny` (the CPU preset every command uses unless told otherwise) and `coco` (the paper's "
        "schedules on MS-COCO, for GPUs; `configs/coco.yaml`). `apis demo` (and `make demo`) runs the tiny preset "
        f"with {demo} (`configs/demo.yaml`). `apis init`, `apis run` and `apis compare` write the config they run "
        "into the project's `config.yaml`, every key spelt out.",
        "",
        "Sections: " + ", ".join(f"[`{s.path or 'top level'}`](#{_anchor(s)})" for s in sections(configs)) + ".",
    ]
    for s in sections(configs):
        parts += ["", f"## {_title(s)}", ""]
        if s.doc:
            parts += [s.doc, ""]
        parts += ["| key | type | " + " | ".join(PRESETS) + " | meaning |",
                  "|---|---|" + "---|" * len(PRESETS) + "---|"]
        for k in s.keys:
            values = " | ".join(f"`{_cell(yaml_value(v))}`" for v in k.values)
            parts.append(f"| `{k.path}` | `{_cell(k.type)}` | {values} | {_cell(markdown(k.meaning))} |")
    return "\n".join(parts) + "\n"


def _title(s: Section) -> str:
    return f"`{s.path}` ({s.cls.__name__})" if s.path else f"Top level ({s.cls.__name__})"


def _anchor(s: Section) -> str:
    """GitHub's anchor of the section's heading: lower case, punctuation dropped, spaces to hyphens."""
    text = _title(s).lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m apis.config_doc docs/configuration.md", file=sys.stderr)
        return 2
    write_text_atomic(render(), Path(args[0]))
    print(f"{args[0]}: written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The one error of ``apis data import``: a refusal that lists every problem, one line each."""

from __future__ import annotations

from collections.abc import Sequence


class ImportRefused(ValueError):
    """The source cannot be imported as it is. ``problems``: one line each, naming the file and the fix."""

    def __init__(self, problems: Sequence[str], head: str | None = None):
        self.problems = list(problems)
        n = len(self.problems)
        head = head or (f"import refused, nothing written: {n} problem{'s' if n != 1 else ''} found; fix them "
                        "(or pass --on-error skip to leave those images out whole):")
        listed = [f"  - {p}" for p in self.problems[:200]]
        if n > 200:
            listed.append(f"  ... and {n - 200} more")
        super().__init__("\n".join([head, *listed]))


def refused(problem: str) -> ImportRefused:
    """A refusal for one problem of the command line or the source as a whole (not a list of bad files)."""
    return ImportRefused([problem], head="import refused:")

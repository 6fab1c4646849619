"""``python -m apis.cli`` is the ``apis`` app (tests start the server so)."""

from apis.cli import app

app()

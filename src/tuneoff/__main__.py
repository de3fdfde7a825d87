"""``python -m tuneoff``: the same CLI as the ``tuneoff`` command."""

from tuneoff.cli.app import app

app()

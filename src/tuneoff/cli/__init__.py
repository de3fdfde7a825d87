"""The command line: ``app`` (Typer commands: parse, call the Python API, print) and ``terminal`` (what it prints)."""

from tuneoff.cli.app import app

__all__ = ["app"]

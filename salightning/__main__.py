"""``python -m salightning`` is the ``salightning`` command."""

from salightning.cli import main

main()

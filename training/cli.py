"""The --help layout of every command in training/, export/ and benchmarks/."""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring's layout kept as written (its command examples stay aligned), and every
    option's default appended from the parser itself, so no help string types a default by hand.
    Defaults of None and False (required options, flags) are not shown."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or "%(default)" in text or action.default is None \
                or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return f"{text} (default: %(default)s)".strip()

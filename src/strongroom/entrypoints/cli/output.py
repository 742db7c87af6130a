"""CLI output and the one mapping from errors to exit codes.

Human output goes through rich; ``--json`` prints one JSON document on stdout per command, so that
scripts never parse tables. Errors go to stderr (or as ``{"error": ...}`` with ``--json``) with
their stable code; tracebacks never reach the user.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape

from strongroom.errors import (
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    InvalidTransitionError,
    NotFoundError,
    SecurityError,
    StorageError,
    StrongroomError,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # typer/click's own usage errors
EXIT_INPUT = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5
EXIT_SECURITY = 6
EXIT_CONFIG = 7
EXIT_STORAGE = 8
EXIT_INCOMPLETE = 9  # `audit verify`: every check passed, but completeness cannot be proven

_EXIT_CODES: tuple[tuple[type[StrongroomError], int], ...] = (
    (InvalidInputError, EXIT_INPUT),
    (NotFoundError, EXIT_NOT_FOUND),
    (ConflictError, EXIT_CONFLICT),
    (InvalidTransitionError, EXIT_CONFLICT),
    (SecurityError, EXIT_SECURITY),
    (ConfigurationError, EXIT_CONFIG),
    (StorageError, EXIT_STORAGE),
)


def exit_code_for(error: StrongroomError) -> int:
    for kind, code in _EXIT_CODES:
        if isinstance(error, kind):
            return code
    return EXIT_FAILURE


@dataclass
class Output:
    json_mode: bool = False
    console: Console = field(default_factory=lambda: Console(highlight=False))
    errors: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))

    def emit(self, data: Any, human: Any = None) -> None:
        """Print ``data`` as JSON in --json mode, else ``human`` (a renderable or text)."""
        if self.json_mode:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        elif human is not None:
            self.console.print(human)

    def note(self, text: str) -> None:
        if not self.json_mode:
            self.console.print(text, markup=False)

    def command(self, text: str) -> None:
        """A line meant to be copied into a shell: never wrapped."""
        if not self.json_mode:
            self.console.print(text, markup=False, soft_wrap=True)

    def warn(self, text: str) -> None:
        self.errors.print(f"[bold yellow]warning:[/] {escape(text)}", markup=True)

    def error(self, error: StrongroomError) -> int:
        code = exit_code_for(error)
        if self.json_mode:
            payload = {"error": {"code": error.code, "message": error.message, "hint": error.hint}}
            sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        else:
            label = escape(f"[{error.code}]")
            self.errors.print(f"[bold red]error[/] {label}: {escape(error.message)}", markup=True)
            if error.hint:
                self.errors.print(f"  hint: {error.hint}", markup=False)
        return code

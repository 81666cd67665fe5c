"""The `esmongo` console script (and `python -m esmongo`).

Kept outside `esmongo.cli`, whose import needs Typer and Rich, so that a core install
(`pip install esmongo` without the `cli` extra) answers with one line instead of a traceback.
"""

from __future__ import annotations

import sys

CLI_DEPENDENCIES = frozenset({"typer", "click", "rich", "shellingham"})
NO_CLI = "esmongo: the command line is an extra: pip install 'esmongo[cli]'"


def main() -> None:
    """Run the command line, or say how to install it (exit 2: a configuration problem)."""
    try:
        from esmongo.cli import app
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in CLI_DEPENDENCIES:
            raise
        print(NO_CLI, file=sys.stderr)
        raise SystemExit(2) from None
    app()


if __name__ == "__main__":
    main()

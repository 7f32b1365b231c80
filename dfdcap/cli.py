"""The `dfdcap` command line. Thin: parse options, call one stage function, print with rich.

Every DfdcapError becomes one line on stderr and exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from dfdcap.errors import DfdcapError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Record depth-from-focus datasets and train DFF networks.")
console = Console(stderr=True)
out = Console()


@app.callback()
def _root() -> None:
    """dfdcap: record depth-from-focus data with a phone and an RGB-D sensor, and train DFF networks."""


@app.command()
def report(
    path: Path = typer.Argument(..., help="calibration.json, a session folder, dataset.h5 or a run folder"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="PNG to write (default: beside the input)"),
) -> None:
    """Write a PNG report of a calibration, a session's clock sync, a dataset or a training run."""
    from dfdcap.report import write_report

    png = write_report(path, output)
    out.print(f"wrote {png}")


# --- commands of each stage are added below; keep each one thin ---------------------------


def main() -> None:
    try:
        app(standalone_mode=False)
    except DfdcapError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    except (typer.Exit,) as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()

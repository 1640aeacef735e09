"""MkDocs hooks (mkdocs.yml `hooks:`): the parts of the docs that are generated, never typed.

- `<!-- cli-reference -->` becomes the reference of every `smoothdino` command and sub-command, read from the typer
  app itself: help text and a table of its visible options, so it cannot drift from `--help`.
- `<!-- figures NAME -->` becomes the tables of `benchmarks/results/NAME.json`, the record a benchmark script wrote
  with `--record` (benchmarks/record.py). A missing record is a WARNING, so `mkdocs build --strict` fails rather than
  publish a page without its figures.
"""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path

log = logging.getLogger("mkdocs.plugins.smoothdino")

CLI_REFERENCE = re.compile(r"<!--\s*cli-reference\s*-->")
FIGURES = re.compile(r"<!--\s*figures\s+([\w.-]+)\s*-->")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def on_page_markdown(markdown: str, page, config, files) -> str:
    where = page.file.src_uri
    if CLI_REFERENCE.search(markdown):
        markdown = CLI_REFERENCE.sub(lambda _: cli_reference(), markdown)
    return FIGURES.sub(lambda match: figures(match.group(1), where), markdown)


# -- figures ------------------------------------------------------------------------------------------

def figures(name: str, page: str, results: Path | None = None) -> str:
    """The record's tables as Markdown; a missing record is a warning (an error under --strict) naming the script."""
    from smoothdino.benchmarks.record import RESULTS, read_record, record_markdown

    path = Path(results or RESULTS) / f"{name}.json"
    if not path.is_file():
        log.warning(f"{page}: no figures for '{name}': {path} is missing (run the benchmark with --record)")
        return f"*No figures recorded yet for `{name}`.*"
    return "\n" + record_markdown(read_record(path)) + "\n"


# -- CLI reference ------------------------------------------------------------------------------------

def cli_reference(app=None) -> str:
    """Markdown for every visible command of the `smoothdino` typer app (default: smoothdino.cli.app)."""
    import typer

    if app is None:
        from smoothdino.cli import app
    root = typer.main.get_command(app)
    return "\n".join(_command_markdown(root, ["smoothdino"], None))


def _command_markdown(command, path: list[str], parent) -> list[str]:
    import typer

    ctx = typer.Context(command, info_name=path[-1], parent=parent)
    title = " ".join(path)
    lines = [f"## `{title}`" if len(path) > 1 else "## `smoothdino`", ""]
    if command.help:
        lines += [_text(inspect.cleandoc(command.help)), ""]
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    arguments = [p for p in params if p.param_type_name == "argument"]
    options = [p for p in params if p.param_type_name == "option"]
    subcommands = {name: sub for name, sub in getattr(command, "commands", {}).items() if not sub.hidden}
    usage = [title] + (["[OPTIONS]"] if options else []) + [_argument_name(a) for a in arguments]
    if subcommands:
        usage.append("COMMAND")
    lines += [f"Usage: `{' '.join(usage)}`", ""]
    if arguments:
        lines += ["| argument | value | help |", "|---|---|---|"]
        lines += [f"| {_code(_argument_name(a))} | {_code(_value(a, ctx))} | {_help(a)} |" for a in arguments]
        lines.append("")
    if options:
        lines += ["| option | value | default | help |", "|---|---|---|---|"]
        lines += [f"| {_code(_option_names(o))} | {_code(_value(o, ctx))} | {_default_cell(o)} | {_help(o)} |"
                  for o in options]
        lines.append("")
    for name, sub in subcommands.items():
        lines += _command_markdown(sub, path + [name], ctx)
    return lines


def _argument_name(argument) -> str:
    name = argument.name.upper()
    return f"{name}..." if argument.nargs == -1 else name


def _option_names(option) -> str:
    return " / ".join(option.opts + option.secondary_opts)


def _value(param, ctx) -> str:
    """What the option takes: its metavar (the allowed values), else its type; nothing for a flag."""
    if getattr(param, "is_flag", False):
        return ""
    if param.metavar:
        return param.metavar
    return param.display_type(ctx).strip("<>")


def _default(option) -> str:
    if option.required:
        return "required"
    value = option.default
    if getattr(option, "is_flag", False):
        if option.secondary_opts:
            return option.opts[0] if value else option.secondary_opts[0]
        return "on" if value else "off"
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _default_cell(option) -> str:
    return "required" if option.required else _code(_default(option))


def _help(param) -> str:
    text = getattr(param, "help", None) or ""
    if param.param_type_name == "argument" and param.required:
        text += " (required)"
    return _text(" ".join(text.split()))


def _code(text: str) -> str:
    """Text in a code span (Python-Markdown's tables do not split a cell on a pipe inside one)."""
    return f"`{text}`" if text else ""


def _text(text: str) -> str:
    """Help text as Markdown: what it wrote in backticks stays code; elsewhere `<out>` is text, not an HTML tag, and
    `*`, `_`, `[`, `|` are characters, not emphasis, links or table cells."""
    parts, last = [], 0
    for match in CODE_SPAN.finditer(text):
        parts += [_escape(text[last:match.start()]), _code(match.group(2))]
        last = match.end()
    parts.append(_escape(text[last:]))
    return "".join(parts)


def _escape(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\*_\[\]|])", r"\\\1", text)

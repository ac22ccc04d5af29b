"""Command-line parsers of ``salightning``: an unknown or mistyped option is one line naming the
closest valid names, and options must be given in full."""

from __future__ import annotations

import re
import textwrap
from typing import Any

from jsonargparse import ArgumentParser
from pytorch_lightning.cli import LightningArgumentParser

__all__ = ["CLIParser", "CommandParser", "closest_options", "reduce_union_error"]


def closest_options(message: str, parser: Any) -> list[str]:
    """The valid names nearest to the unknown ones a jsonargparse ``message`` names: command-line
    options and config keys of ``parser``, or the init arguments of the class a class-path error names."""
    import difflib
    import importlib
    import inspect

    # jsonargparse >= 4.32 says "Option 'x' is not accepted", older ones 'No action for key "x"'
    found = re.search(r"class_path '([\w.]+)'.*?(?:Option '(\w+)' is not accepted|No action for key \"(\w+)\")", message, re.S)
    if found:
        module, _, name = found.group(1).rpartition(".")
        try:
            params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
        except (ImportError, AttributeError, TypeError, ValueError):
            return []
        return difflib.get_close_matches(found.group(2) or found.group(3), [p for p in params if p not in ("self", "args", "kwargs")], n=3)
    options = [o for action in parser._actions for o in action.option_strings if o.startswith("--") and not o.endswith(".help")]
    unknown = re.search(r"unrecognized arguments: (.*)", message, re.I)  # "Unrecognized" in jsonargparse < 4.32
    if unknown:
        given = [a.split("=")[0] for a in unknown.group(1).split() if a.startswith("--")]
        return [m for g in given[:1] for m in difflib.get_close_matches(g, options, n=3)]
    key = re.search(r"(?:does not accept option|Key|No action for key) ['\"]([\w.]+)['\"]", message)
    if key:
        return difflib.get_close_matches(key.group(1), [o[2:] for o in options], n=3)
    return []


class OptionErrors:
    """For jsonargparse parsers: an unknown or mistyped option is a ``ValueError`` with the
    closest valid names (``main`` prints it as one line), not a usage dump; options must be given
    in full (``allow_abbrev=False``: ``--trainer.max_epoch`` is not ``--trainer.max_epochs``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not getattr(self, "exit_on_error", True):  # jsonargparse parsing a nested part: it handles the error
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        names = closest_options(message, parser)
        # One line: jsonargparse nests "Parser key ...:" and "Problem with given class_path ...:" blocks.
        text = re.sub(r'Parser key "([^"]+)":', r"\1:", reduce_union_error(message))
        text = re.sub(r"Problem with given class_path '([\w.]+)':", r"\1:", text)
        text = re.sub(r"Expected a <class '(?:[\w.]*\.)?(\w+)'>\. Got value:", r"expected \1, got", text)
        text = " ".join(line.strip() for line in text.splitlines() if line.strip())
        hint = f"; did you mean {' or '.join(names)}?" if names else ""
        raise ValueError(f"{text}{hint} (`{parser.prog.replace(' [options]', '')} --help` lists the options)")


class CommandParser(OptionErrors, ArgumentParser):
    """The parser of ``salightning predict`` / ``export`` / ``evaluate``."""


class CLIParser(OptionErrors, LightningArgumentParser):
    """The parser of ``salightning fit`` / ``validate`` / ``test``."""


def _type_name(text: str) -> str:
    # "Expected a <class 'int'>" -> "int"; NoneType -> None
    name = re.sub(r"^Expected a <class '(?:[\w.]*\.)?(\w+)'>.*$", r"\1", text, flags=re.S)
    return "None" if name == "NoneType" else name


def reduce_union_error(message: str) -> str:
    """jsonargparse's "Does not validate against any of the Union subtypes" lists one error per
    subtype (``Module | None`` gives "Expected a <class 'NoneType'>"); keep the one that matters,
    with the class it came from, or for plain types say which were expected and what came."""
    found = re.search(r"^ *Does not validate against any of the Union subtypes\n", message, re.M)
    if not found or "Errors:" not in message[found.end() :]:
        return message
    head, body = message[: found.start()], message[found.end() :].split("Errors:", 1)[1]
    given = re.search(r"^\s*Given value: (.*)$", body, re.M)
    body = re.split(r"^\s*Given value type:", body, maxsplit=1, flags=re.M)[0]
    bullet = re.search(r"^( *)- ", body, re.M)
    if bullet is None:
        return message
    items = []
    for item in re.split(rf"^{bullet.group(1)}- ", body, flags=re.M):
        first, *rest = item.rstrip().splitlines() or [""]
        if first.strip():
            items.append("\n".join([first.strip(), *("  " + line for line in textwrap.dedent("\n".join(rest)).splitlines())]).rstrip())
    meaningful = [i for i in items if not i.startswith("Expected a ")]
    if not meaningful and given is not None:
        reduced = f"expected {' or '.join(_type_name(i) for i in items)}, got {given.group(1)}"
    elif len(meaningful) == 1:
        reduced = meaningful[0]
    else:
        return message
    where = re.search(r"class_path='([\w.]+)'", message)
    return head + (f"{where.group(1)}: " if where else "") + reduced

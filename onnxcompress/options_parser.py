"""An ``ArgumentParser`` that remembers the options it was given, through public argparse calls.

Recipe files (``recipe.py``) accept exactly a command's long options, with their types,
choices and repeatability. Reading those back from argparse would mean its private
``_actions``; instead each command builds its parser with ``OptionsParser``, which records
every ``add_argument`` (on the parser or on one of its argument groups) as it happens.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Declared:
    """One option as declared: the action ``add_argument`` returned, and whether it repeats."""

    action: argparse.Action
    append: bool


class OptionsParser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.declared: list[Declared] = []  # before argparse's own __init__ adds -h
        super().__init__(*args, **kwargs)

    def _record(self, action: argparse.Action, kwargs: dict) -> argparse.Action:
        self.declared.append(Declared(action, kwargs.get("action") == "append"))
        return action

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:  # type: ignore[override]
        return self._record(super().add_argument(*args, **kwargs), kwargs)

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument

        def add_recorded(*a: Any, **k: Any) -> argparse.Action:
            return self._record(add(*a, **k), k)

        group.add_argument = add_recorded  # type: ignore[method-assign]
        return group


class _Unset(list):
    """What every destination starts as in ``given_dests``: a list, so repeatable options append to it."""


def given_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations ``argv`` sets explicitly. argparse fills a default only where the
    namespace it is handed lacks the attribute, so every destination starts as a marker; those
    still holding it (or, for a repeatable option, still an empty one) were not given."""
    every, _ = parser.parse_known_args(argv)
    marked = argparse.Namespace(**{dest: _Unset() for dest in vars(every)})
    ns, _ = parser.parse_known_args(argv, namespace=marked)
    return {dest for dest, v in vars(ns).items() if not (isinstance(v, _Unset) and not v)}

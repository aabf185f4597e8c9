"""Recipe files: one TOML file holds how to compress a model and how to gate the result.

```toml
[compress]            # compress's long options, dashes as underscores
calib = "data/calib.npz"
target_macs = 0.6

[check]               # check's long options
max_accuracy_drop = 0.01
min_speedup = 1.2
```

The allowed keys are the options the command's parser (an ``OptionsParser``) was given, so a
recipe accepts exactly what the command line does, with the same types and choices. Paths are relative to the
recipe file. Options given on the command line win over the recipe. An unknown table or
key is an error naming the closest known one: a typo must not silently drop a gate.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxcompress.errors import InputError
from onnxcompress.options_parser import Declared, OptionsParser, given_dests

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

#: the tables a recipe may hold, one per command
TABLES = ("compress", "check")
#: options that make no sense inside a recipe
_EXCLUDED = {"help", "recipe", "version"}


@dataclass
class Recipe:
    path: str
    sha256: str
    tables: dict[str, dict[str, Any]]

    @property
    def folder(self) -> Path:
        return Path(self.path).parent

    def record(self) -> dict:
        """What reports keep: which file, and exactly which contents."""
        return {"path": self.path, "sha256": self.sha256}


def recipe_keys(parser: OptionsParser) -> dict[str, Declared]:
    """Recipe key -> the option as declared, for every long option of ``parser``."""
    out: dict[str, Declared] = {}
    for option in parser.declared:
        longs = [s for s in option.action.option_strings if s.startswith("--")]
        if not longs:
            continue
        key = longs[0][2:].replace("-", "_")
        if key not in _EXCLUDED:
            out[key] = option
    return out


def _closest(word: str, known: list[str]) -> str:
    m = difflib.get_close_matches(word, known, n=1, cutoff=0.5)
    return f" (did you mean {m[0]!r}?)" if m else ""


def load_recipe(path: str | os.PathLike, parsers: dict[str, OptionsParser]) -> Recipe:
    """Read a recipe; every table must be one of ``TABLES``, and each key known to its table's parser.

    ``parsers`` maps tables to their command's parser; a table without one is not checked
    here. ``parse_args`` gives every table's parser, so whichever command reads the recipe
    first stops a typo anywhere in it.
    """
    from onnxcompress.paths import require_regular_file

    p = Path(path)
    if not p.exists():
        raise InputError(f"--recipe: no such file: {p}")
    require_regular_file(p, "--recipe")
    if tomllib is None:  # pragma: no cover - Python 3.10 without tomli
        raise InputError("--recipe needs Python >= 3.11 (tomllib) or the tomli package")
    data = p.read_bytes()
    try:
        tables = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"recipe {p}: not valid TOML: {exc}") from None
    if not any(tables.values()):
        # an empty file, or empty tables: most likely the wrong file, and a gate it meant would be lost
        raise InputError(f"recipe {p}: holds no settings (expected {' or '.join(f'[{t}]' for t in TABLES)} with options)")
    keys = {t: recipe_keys(q) for t, q in parsers.items()}
    for name, table in tables.items():
        if not isinstance(table, dict) or name not in TABLES:
            what = f"table [{name}]" if isinstance(table, dict) else f"top-level key {name!r}"
            hint = _closest(name, list(TABLES))
            if not hint and not isinstance(table, dict):
                hint = f" (settings go in {' or '.join(f'[{t}]' for t in TABLES)})"
            raise InputError(f"recipe {p}: unknown {what}{hint}")
        if name not in keys:
            continue
        for key in table:
            if key in keys[name]:
                continue
            hint = _closest(key, list(keys[name]))
            others = [t for t in keys if t != name and key in keys[t]]
            if others:
                hint = f" ({key} is an option of [{others[0]}])"
            raise InputError(f"recipe {p}: unknown key {key!r} in [{name}]{hint}")
    return Recipe(path=str(p), sha256=hashlib.sha256(data).hexdigest(), tables=tables)


def _is_path(action: argparse.Action) -> bool:
    meta = str(action.metavar or "").upper()
    return action.dest == "output" or "PATH" in meta or "FILE" in meta


def _convert(option: Declared, key: str, value: Any, recipe: Recipe, table: str) -> Any:
    action = option.action
    where = f"recipe {recipe.path}: [{table}] {key}"
    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise InputError(f"{where}: expected true or false, got {value!r}")
        return action.const if value else action.default
    if option.append:
        items = value if isinstance(value, list) else [value]
        return [_scalar(action, where, v, recipe) for v in items]
    if isinstance(value, (list, dict)):
        raise InputError(f"{where}: expected one value, got {value!r}")
    return _scalar(action, where, value, recipe)


def _scalar(action: argparse.Action, where: str, value: Any, recipe: Recipe) -> Any:
    kind = action.type
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise InputError(f"{where}: expected {getattr(kind, '__name__', 'a string')}, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise InputError(f"{where}: expected an integer, got {value!r}")
    if kind is float and not isinstance(value, (int, float)):
        raise InputError(f"{where}: expected a number, got {value!r}")
    if kind is None and not isinstance(value, str):
        raise InputError(f"{where}: expected a string, got {value!r}")
    if kind is not None and kind not in (int, float):
        try:
            value = kind(str(value))
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise InputError(f"{where}: {exc}") from None
    elif kind is not None:
        value = kind(value)
    if action.choices is not None and value not in action.choices:
        raise InputError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    if _is_path(action) and isinstance(value, str) and not Path(value).is_absolute():
        value = os.path.normpath(recipe.folder / value)
    return value


def parse_args(parser: OptionsParser, argv: list[str], table: str) -> tuple[argparse.Namespace, Recipe | None]:
    """Parse ``argv``; with ``--recipe``, the recipe's ``[table]`` fills what ``argv`` leaves unset."""
    args = parser.parse_args(argv)
    if not getattr(args, "recipe", None):
        return args, None
    # Imported only for a recipe: ``check``'s options pull in the speed gate a plain compress never uses.
    from onnxcompress.check_args import check_parser
    from onnxcompress.compress_args import compress_parser

    # Every table is checked, whichever command reads the recipe: a typo anywhere stops the first step.
    recipe = load_recipe(args.recipe, {"check": check_parser(), "compress": compress_parser(), table: parser})
    keys = recipe_keys(parser)
    given = given_dests(parser, argv)
    defaults = {}
    for key, value in recipe.tables.get(table, {}).items():
        option = keys[key]
        if option.action.dest not in given:
            defaults[option.action.dest] = _convert(option, key, value, recipe, table)
    parser.set_defaults(**defaults)
    return parser.parse_args(argv), recipe

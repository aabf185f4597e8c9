"""OptionsParser records every option as declared; given_dests tells given options from defaults."""

from __future__ import annotations

from onnxcompress.options_parser import OptionsParser, given_dests


def _parser() -> OptionsParser:
    p = OptionsParser(prog="t")
    p.add_argument("model")
    p.add_argument("--ratio", type=float, default=0.1)
    g = p.add_argument_group("more")
    g.add_argument("--exclude", action="append", default=[])
    g.add_argument("--fast", action="store_true")
    g.add_argument("--name", default="x")
    return p


def test_every_option_is_declared_with_whether_it_repeats():
    p = _parser()
    got = {d.action.dest: d.append for d in p.declared}
    assert got == {"help": False, "model": False, "ratio": False, "exclude": True, "fast": False, "name": False}
    assert p.parse_args(["m", "--exclude", "a", "--exclude", "b"]).exclude == ["a", "b"]  # still parses as before


def test_given_dests_counts_an_option_given_at_its_default_value():
    p = _parser()
    assert given_dests(p, ["m"]) == {"model"}
    assert given_dests(p, ["m", "--ratio", "0.1", "--name", "x"]) == {"model", "ratio", "name"}
    assert given_dests(p, ["m", "--exclude", "a", "--fast"]) == {"model", "exclude", "fast"}
    # the parser's defaults are untouched afterwards
    args = p.parse_args(["m"])
    assert (args.ratio, args.exclude, args.fast, args.name) == (0.1, [], False, "x")

"""Recipe files: keys from the parsers, paths relative to the recipe, flags win, typos are errors."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from onnxcompress.bench.testing import tiny_classifier
from onnxcompress.check import check_parser
from onnxcompress.cli import main
from onnxcompress.compress_args import compress_parser
from onnxcompress.errors import InputError
from onnxcompress.recipe import load_recipe, parse_args, recipe_keys
from tests.conftest import MODELS


def _recipe(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_keys_are_the_long_options_of_each_command():
    compress, check = recipe_keys(compress_parser()), recipe_keys(check_parser())
    for key in ("ratio", "round_to", "calib", "target_macs", "max_drift", "recover", "exclude", "output", "report"):
        assert key in compress
    for key in ("min_cosine", "max_size_mb", "max_params_ratio", "min_speedup", "provider", "batch",
                "on_inconclusive", "eval", "junit", "markdown"):
        assert key in check
    assert "recipe" not in compress and "help" not in check and "model" not in compress
    assert "version" not in compress  # --version exits: a recipe key for it would end every run


def test_flags_override_the_recipe(tmp_path):
    r = _recipe(tmp_path, '[compress]\nratio = 0.5\nround_to = 4\nexclude = ["a"]\nno_simplify = true\n')
    args, recipe = parse_args(compress_parser(), ["m.onnx", "--recipe", str(r)], "compress")
    assert (args.ratio, args.round_to, args.exclude, args.no_simplify) == (0.5, 4, ["a"], True)
    args, _ = parse_args(compress_parser(), ["m.onnx", "--recipe", str(r), "--ratio", "0.2", "--exclude", "b"],
                         "compress")
    assert (args.ratio, args.round_to, args.exclude) == (0.2, 4, ["b"])  # a repeatable flag replaces, not extends
    assert recipe.sha256 == hashlib.sha256(r.read_bytes()).hexdigest()


def test_paths_are_relative_to_the_recipe(tmp_path):
    r = _recipe(tmp_path, '[check]\neval = "data/eval.npz"\ncalib = "/abs/calib.npz"\nmin_cosine = 0.9\n',
                "ci/r.toml")
    args, _ = parse_args(check_parser(), ["a.onnx", "b.onnx", "--recipe", str(r)], "check")
    assert Path(args.eval) == tmp_path / "ci" / "data" / "eval.npz"
    assert args.calib == "/abs/calib.npz"
    assert args.min_cosine == 0.9
    assert args.input_shape == []  # untouched defaults stay


@pytest.mark.parametrize("text, words", [
    ("[compress]\nratoi = 0.3\n", ["'ratoi'", "[compress]", "'ratio'"]),
    ("[chek]\nmin_cosine = 0.9\n", ["[chek]", "'check'"]),
    ("[compress]\nmin_cosine = 0.9\n", ["'min_cosine'", "[check]"]),
    ("ratio = 0.3\n", ["'ratio'", "[compress]"]),
    ("[check]\nmin_cosine = \"high\"\n", ["min_cosine", "number"]),
    ("[check]\nbatch = 1.5\n", ["batch", "integer"]),
    ("[check]\nprovider = \"tpu\"\n", ["provider", "'tpu'"]),
    ("[compress]\nno_simplify = 1\n", ["no_simplify", "true or false"]),
    ("[compress\nratio = 0.3\n", ["not valid TOML"]),
])
def test_bad_recipes_exit_2_naming_the_key(tmp_path, capsys, text, words):
    model = tiny_classifier(tmp_path / "m.onnx")
    r = _recipe(tmp_path, text)
    which = ["check", model, model] if "[check]" in text and "[compress]" not in text else [model]
    assert main([*which, "--recipe", str(r), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onnxcompress: error:") and err.count("\n") == 1
    for w in words:
        assert w in err
    assert not (tmp_path / "m.compressed.onnx").exists()


def test_compress_validates_the_check_table_too(tmp_path, capsys):
    model = tiny_classifier(tmp_path / "m.onnx")
    r = _recipe(tmp_path, "[compress]\nratio = 0.2\n[check]\nmin_cosin = 0.9\n")
    assert main([model, "--recipe", str(r), "-q"]) == 2
    assert "'min_cosin' in [check] (did you mean 'min_cosine'?)" in capsys.readouterr().err


def test_check_validates_the_compress_table_too(tmp_path, capsys):
    """The gate reads the same recipe as compress: a typo in [compress] fails the gate too (exit 2)."""
    r = _recipe(tmp_path, "[compress]\nratoi = 0.2\n[check]\nmin_cosine = 0.9\n")
    for parser, argv, table in ((check_parser(), ["a", "b"], "check"), (compress_parser(), ["a"], "compress")):
        with pytest.raises(InputError, match="'ratoi' in \\[compress\\] \\(did you mean 'ratio'\\?\\)"):
            parse_args(parser, [*argv, "--recipe", str(r)], table)
    model = tiny_classifier(tmp_path / "m.onnx")
    assert main(["check", model, model, "--recipe", str(r), "-q"]) == 2
    assert "'ratoi' in [compress]" in capsys.readouterr().err


def test_missing_recipe_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_recipe(tmp_path / "nope.toml", {"check": check_parser()})


def test_recipe_sha_reaches_compress_and_check_reports(tmp_path):
    model = tiny_classifier(tmp_path / "m.onnx")
    r = _recipe(tmp_path, '[compress]\nratio = 0.25\nround_to = 4\noutput = "small.onnx"\n'
                          '[check]\nmin_cosine = 0.0\nmax_params_ratio = 0.9\nmax_size_mb = 1\njson = "gate.json"\n')
    sha = hashlib.sha256(r.read_bytes()).hexdigest()
    assert main([model, "--recipe", str(r), "--report", str(tmp_path / "rep.json"), "-q"]) == 0
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["config"]["recipe"] == {"path": str(r), "sha256": sha}
    assert rep["config"]["ratio"] == 0.25 and rep["config"]["round_to"] == 4
    small = tmp_path / "small.onnx"  # the recipe's output path, relative to the recipe
    assert small.exists()
    x = tmp_path / "gate.xml"
    assert main(["check", model, str(small), "--recipe", str(r), "--junit", str(x), "-q"]) == 0
    gate = json.loads((tmp_path / "gate.json").read_text())
    assert gate["recipe"]["sha256"] == sha
    assert {c["name"]: c["threshold"] for c in gate["criteria"]}["max_params_ratio"] == 0.9
    props = {p.get("name"): p.get("value") for p in ET.parse(x).getroot().iter("property")}
    assert props["recipe_sha256"] == sha
    # a flag overrides the recipe's threshold: now the same files fail
    assert main(["check", model, str(small), "--recipe", str(r), "--max-params-ratio", "0.1", "-q"]) == 1


def test_the_example_recipe_is_valid():
    r = load_recipe(Path(__file__).resolve().parent.parent / "examples" / "ci" / "digits.toml",
                    {"compress": compress_parser(), "check": check_parser()})
    assert load_recipe(r.path, {}).tables == r.tables  # table names are known without any parser
    assert set(r.tables) == {"compress", "check"}
    args, _ = parse_args(check_parser(), ["a", "b", "--recipe", r.path], "check")
    assert Path(args.eval).resolve() == (MODELS / "digits_eval.npz").resolve()

"""Distillation as a recovery step: it trains the same graph, keeps only what wins on held-out data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

torch = pytest.importorskip("torch", reason="the finetune extra (torch) is not installed")

from onnxcompress.cli import main  # noqa: E402
from onnxcompress.runtime import Session  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "models"
DIGITS = str(MODELS / "digits_cnn.onnx")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    z = np.load(MODELS / "digits_eval.npz")
    d = tmp_path_factory.mktemp("digits_distill")
    np.savez(d / "calib.npz", input=z["x"][:160])
    return {"calib": str(d / "calib.npz"), "x": z["x"][160:], "y": z["y"][160:], "dir": d}


def _run(digits, name: str, *extra: str) -> dict:
    out, rep = digits["dir"] / f"{name}.onnx", digits["dir"] / f"{name}.json"
    assert main([DIGITS, "--calib", digits["calib"], "--target-macs", "0.3", "-o", str(out), "--report", str(rep),
                 "-q", "--no-simplify", *extra]) == 0
    return {"path": str(out), "report": json.loads(rep.read_text())}


def _accuracy(path: str, digits) -> float:
    out = next(iter(Session(path).run({"input": digits["x"]}).values()))
    return float((out.argmax(1) == digits["y"]).mean())


@pytest.fixture(scope="module")
def runs(digits):
    refit = _run(digits, "refit", "--recover", "refit")
    distill = _run(digits, "distill", "--recover", "distill", "--distill-steps", "100", "--distill-lr", "1e-3")
    return refit, distill


def test_distill_starts_from_the_refit_and_keeps_only_a_held_out_win(runs, digits):
    refit, distill = runs
    d = distill["report"]["recovery"]["distill"]
    assert distill["report"]["recovery"]["method"] == "distill"
    assert 25 <= d["steps"] <= 100 and d["history"][0]["step"] == 0
    # step 0 is the refit model itself: the same held-out drift as the refit run's verify step
    assert d["history"][0]["held_out_drift"] == pytest.approx(1 - refit["report"]["fidelity"]["top1_agreement"])
    assert d["held_out_drift_distill"] <= d["held_out_drift_refit"]
    assert d["losses"] == {next(iter(d["losses"])): "logits"}
    assert d["kept"] == "distill", d  # on this model 100 steps win (measured: see the accuracy below)
    # what was kept is what was written: the verify step measures the same held-out agreement
    assert 1 - distill["report"]["fidelity"]["top1_agreement"] == pytest.approx(d["held_out_drift_distill"])
    # same graph, new weights: node for node the same ops, initializer for initializer the same shapes
    a, b = onnx.load(refit["path"]), onnx.load(distill["path"])
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    shapes = lambda m: {i.name: tuple(i.dims) for i in m.graph.initializer}  # noqa: E731
    assert shapes(a) == shapes(b)
    assert any(not np.array_equal(onh.to_array(x), onh.to_array(y)) for x, y in zip(a.graph.initializer, b.graph.initializer))
    # and on labelled data the distilled model is at least as good as the refit one
    assert _accuracy(distill["path"], digits) >= _accuracy(refit["path"], digits) - 0.005


def test_distill_is_deterministic_for_a_seed(runs, digits):
    _, distill = runs
    again = _run(digits, "distill_again", "--recover", "distill", "--distill-steps", "100", "--distill-lr", "1e-3")
    a, b = onnx.load(distill["path"]), onnx.load(again["path"])
    for x, y in zip(a.graph.initializer, b.graph.initializer):
        assert np.array_equal(onh.to_array(x), onh.to_array(y)), x.name


def test_distill_mix_blends_minibatches_and_is_off_by_default(runs, digits, capsys):
    _, distill = runs
    d = distill["report"]["recovery"]["distill"]
    assert d["mix"] == 0.0 and d["warmup"] == 10
    plain = _run(digits, "distill_mix", "--recover", "distill", "--distill-steps", "100", "--distill-lr", "1e-3",
                 "--distill-mix", "0.5")
    assert plain["report"]["recovery"]["distill"]["mix"] == 0.5
    a, b = onnx.load(distill["path"]), onnx.load(plain["path"])
    assert any(not np.array_equal(onh.to_array(x), onh.to_array(y)) for x, y in zip(a.graph.initializer, b.graph.initializer))
    assert main([DIGITS, "--calib", digits["calib"], "--recover", "distill", "--distill-mix", "1.5", "-o",
                 str(digits["dir"] / "bad.onnx")]) == 2
    assert "--distill-mix must be a share in [0, 1]" in capsys.readouterr().err


def test_distill_augment_reports_a_perturbed_copy_of_the_held_out_split_and_judges_the_given_one(runs, digits):
    """With --distill-augment a perturbed copy of each held-out sample joins the held-out loss and
    its drift is reported per evaluation, but the drift that chooses is the given samples' alone
    (on PP-OCRv4 rec the perturbed copies' drift kept a refit that read the shift split worse)."""
    plain = _run(digits, "distill_plain", "--recover", "distill", "--distill-steps", "25", "--distill-lr", "1e-3",
                 "--distill-augment", "0")
    p = plain["report"]["recovery"]["distill"]
    assert p["augment"] == 0.0 and p["held_out_perturbed"] == 0
    aug = _run(digits, "distill_aug", "--recover", "distill", "--distill-steps", "25", "--distill-lr", "1e-3",
               "--distill-augment", "0.5")
    a = aug["report"]["recovery"]["distill"]
    held = plain["report"]["fidelity"]["samples"]
    assert a["augment"] == 0.5 and a["held_out_perturbed"] == held
    assert a["history"][0]["held_out_loss"] != pytest.approx(p["history"][0]["held_out_loss"], rel=1e-3)
    # step 0 is the same refit: judged on the given held-out samples, the same drift with or without
    assert a["history"][0]["held_out_drift"] == p["history"][0]["held_out_drift"]
    assert all(0.0 <= h["perturbed_drift"] <= 1.0 for h in a["history"]) and len(a["history"]) == 2
    assert all("perturbed_drift" not in h for h in p["history"])
    # the written model's own verify step is on the clean held-out split, and measures what the judge kept
    assert aug["report"]["fidelity"]["samples"] == held
    assert 1 - aug["report"]["fidelity"]["top1_agreement"] == pytest.approx(a["held_out_drift_distill"])


def test_distill_perturbs_and_averages_by_default_on_an_image_classifier(runs):
    """The defaults (config.DISTILL_AUGMENT, DISTILL_AVERAGE): every training sample perturbed, a
    perturbed copy of each held-out sample in the loss, the 0.95 weight average judged and kept."""
    _, distill = runs
    d, held = distill["report"]["recovery"]["distill"], distill["report"]["fidelity"]["samples"]
    assert d["augment"] == 1.0 and d["average"] == 0.95 and d["held_out_perturbed"] == held
    assert "defaults_off" not in d and all("perturbed_drift" in h for h in d["history"])


@pytest.mark.parametrize("key, default, other", [("step_sizes", "relative", "absolute"),
                                                  ("schedule", "constant", "cosine")])
def test_step_sizes_and_schedule_have_a_default_and_take_the_other_on_request(runs, digits, key, default, other):
    _, distill = runs
    assert distill["report"]["recovery"]["distill"][key] == default
    run = _run(digits, f"distill_{other}", "--recover", "distill", "--distill-steps", "25", "--distill-lr", "1e-3",
               f"--distill-{key.replace('_', '-')}", other)
    d = run["report"]["recovery"]["distill"]
    assert d[key] == other and d["steps"] == 25 and run["report"]["config"][f"distill_{key}"] == other


def test_an_unknown_schedule_is_one_input_error(digits):
    import onnxcompress as oc
    from onnxcompress.errors import InputError

    with pytest.raises(InputError, match="--distill-schedule must be constant or cosine, got 'linear'"):
        oc.compress(DIGITS, oc.CompressConfig(calib=digits["calib"], recover="distill", distill_schedule="linear"))


def test_feature_weight_zero_distills_the_outputs_alone(runs, digits, capsys):
    _, distill = runs
    d = distill["report"]["recovery"]["distill"]
    assert d["feature_weight"] == 1.0 and len(d["features"]) >= 1  # by default the boundary features are matched
    alone = _run(digits, "distill_fw0", "--recover", "distill", "--distill-steps", "25", "--distill-lr", "1e-3",
                 "--distill-feature-weight", "0")
    a = alone["report"]["recovery"]["distill"]
    assert a["feature_weight"] == 0.0 and a["features"] == [] and a["steps"] == 25
    # the held-out loss is the output term alone: at step 0 (the same refit weights) it is lower
    assert a["history"][0]["held_out_loss"] < d["history"][0]["held_out_loss"]
    assert main([DIGITS, "--calib", digits["calib"], "--recover", "distill", "--distill-feature-weight", "-1", "-o",
                 str(digits["dir"] / "bad.onnx")]) == 2
    assert "--distill-feature-weight must be a finite number, at least 0" in capsys.readouterr().err


def test_an_op_the_backend_cannot_run_keeps_the_refit_with_a_warning(digits, monkeypatch):
    import onnxcompress.finetune as ft

    monkeypatch.setattr(ft, "unsupported_ops", lambda proto: {"FancyOp": 2})
    r = _run(digits, "unsupported", "--recover", "distill", "--distill-steps", "5")["report"]
    assert r["recovery"]["distill"]["kept"] == "refit"
    assert any("cannot run FancyOp x2" in w for w in r["warnings"])


def test_ctrl_c_keeps_the_best_weights_so_far(digits, monkeypatch):
    from onnxcompress.finetune.distill import Distiller

    real = Distiller._backward
    calls = {"n": 0}

    def interrupted(self, feeds, parts):
        calls["n"] += 1
        if calls["n"] > 30:
            raise KeyboardInterrupt
        return real(self, feeds, parts)

    monkeypatch.setattr(Distiller, "_backward", interrupted)
    r = _run(digits, "interrupted", "--recover", "distill", "--distill-steps", "100", "--distill-lr", "1e-3")
    d = r["report"]["recovery"]["distill"]
    assert d["interrupted"] and d["steps"] == 30 and d["best_step"] in (0, 25)
    assert Path(r["path"]).exists()


def test_train_labels_add_a_supervised_term(digits):
    labels = digits["dir"] / "train_labels.npz"
    np.savez(labels, input=digits["x"][:64], y=digits["y"][:64])
    r = _run(digits, "labelled", "--recover", "distill", "--distill-steps", "25", "--train-labels", str(labels))["report"]
    d = r["recovery"]["distill"]
    assert d["labelled_samples"] == 64 and d["steps"] == 25


def test_ctc_labels_give_a_finite_loss():
    """The CTC branch of the supervised term on a (N, T, C) log-softmax head (a tiny graph)."""
    from onnxcompress.accuracy import LabelledSet
    from onnxcompress.finetune.distill import DistillConfig, Distiller
    import onnx_ir as ir

    rng = np.random.default_rng(0)
    w = onh.from_array(rng.standard_normal((4, 5)).astype(np.float32), "w")
    g = oh.make_graph([oh.make_node("MatMul", ["x", "w"], ["y"])], "g",
                      [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6, 4])],
                      [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 6, 5])], [w])
    m = ir.from_proto(oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)]))
    x = rng.standard_normal((8, 6, 4)).astype(np.float32)
    labels = np.array([[1, 2, -1]] * 8)
    cfg = DistillConfig(steps=3, eval_every=1, batch=4, labelled=LabelledSet({"x": x}, labels))
    out = Distiller(m, m.clone() if hasattr(m, "clone") else m, [], [{"x": x}], [{"x": x[:4]}], cfg).run()
    assert out["steps"] == 3 and out["labelled_samples"] == 8
    assert all(np.isfinite(h["held_out_loss"]) for h in out["history"])


def test_ctc_weight_adds_the_reading_term_on_ctc_heads_only():
    """A (N, T, C) head whose argmax is mostly class 0 is a CTC head: with ``ctc_weight`` the
    held-out loss gains the CTC loss against the original's reading; without it, nothing changes."""
    from onnxcompress.finetune.distill import DistillConfig, Distiller
    import onnx_ir as ir

    rng = np.random.default_rng(0)
    w = onh.from_array(rng.standard_normal((4, 5)).astype(np.float32), "w")
    b = onh.from_array(np.array([2.5, 0, 0, 0, 0], dtype=np.float32), "b")
    g = oh.make_graph([oh.make_node("MatMul", ["x", "w"], ["z"]), oh.make_node("Add", ["z", "b"], ["y"])], "g",
                      [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 12, 4])],
                      [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 12, 5])], [w, b])
    teacher = ir.from_proto(oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)]))
    x = rng.standard_normal((16, 12, 4)).astype(np.float32)
    losses = {}
    for weight in (0.0, 1.0):
        student = ir.from_proto(oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)]))
        cfg = DistillConfig(steps=2, eval_every=1, batch=4, ctc_weight=weight)
        out = Distiller(student, teacher, [], [{"x": x}], [{"x": x[:8]}], cfg).run()
        losses[weight] = out["held_out_loss_refit"]
        assert out["ctc_heads"] == ({"y": 0} if weight else {})
        assert all(np.isfinite(h["held_out_loss"]) for h in out["history"])
    assert losses[0.0] == pytest.approx(0.0, abs=1e-6)  # the student is the teacher: KL 0
    assert losses[1.0] > 1e-3  # the CTC loss of the teacher's own reading is not 0
    from onnxcompress.config import DISTILL_CTC_WEIGHT

    assert DistillConfig().ctc_weight == DISTILL_CTC_WEIGHT  # the API's default is the CLI's


@pytest.mark.parametrize("tty, answer, code", [(False, None, 130), (True, "n", 130), (True, "y", 0)])
def test_ctrl_c_during_distillation_asks_on_a_terminal_else_writes_nothing(tmp_path, monkeypatch, capsys, tty, answer, code):
    """The first Ctrl-C stops training and keeps the best weights; the CLI writes them only when asked."""
    import signal
    import sys

    from onnxcompress.cli import main
    from onnxcompress.cli_env import note_signal
    from onnxcompress.finetune import distill as distill_mod

    real = distill_mod.Distiller._backward
    calls = {"n": 0}

    def interrupt_at_step_3(self, feeds, parts):
        calls["n"] += 1
        if calls["n"] == 3:
            note_signal(signal.SIGINT)  # what the CLI's SIGINT handler records before raising
            raise KeyboardInterrupt
        return real(self, feeds, parts)

    monkeypatch.setattr(distill_mod.Distiller, "_backward", interrupt_at_step_3)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: tty, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or answer)
    calib = tmp_path / "c.npz"
    np.savez(calib, input=np.load(MODELS / "digits_eval.npz")["x"][:64])
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    rc = main([str(MODELS / "digits_cnn.onnx"), "--calib", str(calib), "--target-macs", "0.7", "--recover", "distill",
               "--distill-steps", "50", "-o", str(out), "--report", str(rep), "-q"])
    assert rc == code
    assert bool(asked) == tty and (not asked or "distillation interrupted at step 2" in asked[0])
    assert out.exists() == (code == 0) and rep.exists() == (code == 0)
    if code == 130:
        assert capsys.readouterr().err.strip().splitlines()[-1] == "onnxcompress: interrupted"
    else:
        import json

        d = json.loads(rep.read_text())["recovery"]["distill"]
        assert d["interrupted"] is True and d["steps"] == 2


def _fixed_batch_digits(tmp_path, bake_batch: bool) -> str:
    """digits_cnn with its input declared (1, 1, 8, 8); with ``bake_batch`` the Flatten becomes a
    Reshape to (1, -1), which cannot run two samples at once."""
    m = onnx.load(DIGITS)
    m.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    m.graph.output[0].type.tensor_type.shape.dim[0].Clear()
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    if bake_batch:
        flat = next(n for n in m.graph.node if n.op_type == "Flatten")
        flat.op_type = "Reshape"
        del flat.attribute[:]
        flat.input.append("batch_one")
        m.graph.initializer.append(onh.from_array(np.array([1, -1], np.int64), "batch_one"))
    path = tmp_path / ("baked.onnx" if bake_batch else "fixed.onnx")
    onnx.save(m, path)
    return str(path)


@pytest.mark.parametrize("bake_batch", [False, True])
def test_a_fixed_batch_graph_trains_batched_where_torch_can_run_it(tmp_path, digits, bake_batch):
    src = _fixed_batch_digits(tmp_path, bake_batch)
    rep = tmp_path / "r.json"
    assert main([src, "--calib", digits["calib"], "--target-macs", "0.5", "--recover", "distill", "--distill-steps", "6",
                 "-o", str(tmp_path / "o.onnx"), "--report", str(rep), "-q", "--no-simplify"]) == 0
    d = json.loads(rep.read_text())["recovery"]["distill"]
    assert d["student_batched"] is (not bake_batch)
    assert d["steps"] == 6 and d["batch"] == 16
    out = Session(str(tmp_path / "o.onnx")).run({"input": digits["x"][:1]})
    assert next(iter(out.values())).shape == (1, 10)


def test_held_out_targets_too_big_to_keep_are_recomputed_alike(runs, digits, monkeypatch):
    """Past HELD_TARGET_BYTES the teacher's held-out targets (outputs and boundary features of
    every held-out sample: gigabytes on PP-OCRv4 rec with 256) are recomputed at each evaluation
    instead of kept: the same held-out figures at every step, in bounded memory."""
    import onnxcompress.finetune.distill as distill

    _, kept = runs
    monkeypatch.setattr(distill, "HELD_TARGET_BYTES", 0)
    seen = []
    real = distill.Distiller._targets
    monkeypatch.setattr(distill.Distiller, "_targets", lambda self, feeds: seen.append(1) or real(self, feeds))
    again = _run(digits, "distill_recomputed", "--recover", "distill", "--distill-steps", "100", "--distill-lr", "1e-3")
    a, b = kept["report"]["recovery"]["distill"], again["report"]["recovery"]["distill"]
    assert [h["held_out_loss"] for h in b["history"]] == pytest.approx([h["held_out_loss"] for h in a["history"]], rel=1e-5)
    assert [h["held_out_drift"] for h in b["history"]] == [h["held_out_drift"] for h in a["history"]]
    assert (b["kept"], b["best_step"]) == (a["kept"], a["best_step"])
    assert len(seen) > b["steps"] + len(b["history"])  # held-out targets recomputed at every evaluation


def test_distillation_after_allocation_rounds_learns_from_the_original(tmp_path):
    """Two rounds: the first only refits, the last distills against the original (its features
    with both rounds' removed channels dropped), and the written model runs."""
    import json

    calib = tmp_path / "c.npz"
    np.savez(calib, input=np.load(MODELS / "digits_eval.npz")["x"][:64])
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    rc = main([str(MODELS / "digits_cnn.onnx"), "--calib", str(calib), "--target-macs", "0.5", "--recover", "distill",
               "--allocation-rounds", "2", "--distill-steps", "6", "-o", str(out), "--report", str(rep), "-q"])
    assert rc == 0
    r = json.loads(rep.read_text())
    assert len(r["search"]["rounds"]) == 2 and r["after"]["macs"] <= 0.5 * r["before"]["macs"]
    d = r["recovery"]["distill"]
    assert d["steps"] == 6 and d["kept"] in ("refit", "distill") and "warning" not in d
    assert len(d["features"]) >= 1


def test_distill_every_round_distills_between_rounds_against_the_original(tmp_path):
    """--distill-every-round: the first round distills too (its row says what it kept), the second
    round prunes the distilled model, and the last distills against the original. Without
    --allocation-rounds the flag is one input error, not a silent no-op."""
    calib = tmp_path / "c.npz"
    np.savez(calib, input=np.load(MODELS / "digits_eval.npz")["x"][:64])
    base = [str(MODELS / "digits_cnn.onnx"), "--calib", str(calib), "--target-macs", "0.5", "--recover", "distill",
            "--distill-steps", "30", "--distill-lr", "1e-3", "-q", "--no-simplify"]
    runs = {}
    for name, extra in (("last", []), ("every", ["--distill-every-round"])):
        out, rep = tmp_path / f"{name}.onnx", tmp_path / f"{name}.json"
        assert main([*base, "--allocation-rounds", "2", *extra, "-o", str(out), "--report", str(rep)]) == 0
        runs[name] = (json.loads(rep.read_text()), out.read_bytes())
    last, every = runs["last"][0]["search"]["rounds"], runs["every"][0]["search"]["rounds"]
    assert "distill_kept" not in last[0] and last[1]["distill_steps"] == 30
    assert every[0]["distill_steps"] == 30 and every[0]["distill_kept"] in ("refit", "distill")
    assert every[1]["distill_steps"] == 30
    final = runs["every"][0]["recovery"]["distill"]
    assert final["steps"] == 30 and len(final["features"]) >= 1 and "warning" not in final
    assert runs["every"][0]["after"]["macs"] <= 0.5 * runs["every"][0]["before"]["macs"]
    if every[0]["distill_kept"] == "distill":  # the second round started from other weights
        assert runs["every"][1] != runs["last"][1]
    Session(str(tmp_path / "every.onnx")).run({"input": np.load(MODELS / "digits_eval.npz")["x"][:4]})
    assert main([*base, "--distill-every-round", "-o", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()


def test_ctrl_c_in_an_earlier_rounds_distillation_writes_nothing(tmp_path, monkeypatch):
    """Stopped in the first of two rounds, the model is short of its target: no second round, exit 130,
    nothing written (the last round's Ctrl-C is the one that may ask to write the best weights)."""
    from onnxcompress.pruning import distill_step

    calls = []

    def interrupted(model, reference, consumers, fit, held, cfg, progress=None):
        calls.append(len(consumers))
        return {"kept": "refit", "steps": 3, "best_step": 0, "interrupted": True}

    monkeypatch.setattr(distill_step, "run_distillation", interrupted)
    calib = tmp_path / "c.npz"
    np.savez(calib, input=np.load(MODELS / "digits_eval.npz")["x"][:64])
    out = tmp_path / "o.onnx"
    rc = main([str(MODELS / "digits_cnn.onnx"), "--calib", str(calib), "--target-macs", "0.5", "--recover", "distill",
               "--allocation-rounds", "2", "--distill-every-round", "-o", str(out), "-q", "--no-simplify"])
    assert rc == 130 and len(calls) == 1 and not out.exists()


def test_labels_on_an_output_without_classes_are_one_input_error():
    """A probability map (or a YOLO head) has no class axis: --train-labels on it is refused in one
    line, where the supervised term would have failed inside torch."""
    from onnxcompress.accuracy import LabelledSet
    from onnxcompress.errors import InputError
    from onnxcompress.finetune.distill import DistillConfig, Distiller
    import onnx_ir as ir

    rng = np.random.default_rng(0)
    w = onh.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    g = oh.make_graph([oh.make_node("Conv", ["x", "w"], ["z"]), oh.make_node("Sigmoid", ["z"], ["y"])], "g",
                      [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])],
                      [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])], [w])
    m = ir.from_proto(oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)]))
    x = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
    cfg = DistillConfig(steps=3, eval_every=1, batch=4, labelled=LabelledSet({"x": x}, np.zeros(8, np.int64)))
    with pytest.raises(InputError, match=r"--train-labels: the first output 'y' is read as map"):
        Distiller(m, m, [], [{"x": x}], [{"x": x[:4]}], cfg)

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the finetune extra (torch) is not installed")

from onnxcompress.finetune.losses import loss_kinds, output_loss  # noqa: E402

CFG = SimpleNamespace(class_axes={}, map_thresholds={})


def test_each_output_gets_its_kind_of_loss():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 10)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    prob_map = rng.uniform(0, 1, (2, 1, 32, 32)).astype(np.float32)
    kinds = loss_kinds({"l": logits, "p": probs, "m": prob_map, "i": np.arange(4), "h": logits}, CFG, frozenset({"h"}))
    assert kinds == {"l": ("logits", 1), "p": ("probs", 1), "m": ("map", None), "i": ("skip", None), "h": ("mse", None)}


def test_losses_are_zero_on_the_teacher_and_grow_away_from_it():
    t = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.1, 0.0]])
    for kind, target in (("logits", t), ("probs", torch.softmax(t, 1)), ("mse", t)):
        assert float(output_loss(kind, 1, target, target)) == pytest.approx(0.0, abs=1e-6)
        assert float(output_loss(kind, 1, target.flip(1), target)) > 0.05


def test_a_yolo_head_gets_cross_entropy_on_its_scores_and_mse_on_its_boxes():
    """(N, 4 + classes, anchors): read whole it was "logits" softmaxed across 2100 anchors (NudeNet)."""
    rng = np.random.default_rng(1)
    head = np.concatenate([rng.uniform(0, 320, (2, 4, 300)), rng.uniform(0, 0.2, (2, 3, 300))], axis=1).astype(np.float32)
    assert loss_kinds({"out": head}, CFG) == {"out": ("boxscores", (1, 4))}
    assert loss_kinds({"out": head}, SimpleNamespace(class_axes={"out": 1}, map_thresholds={}))["out"] == ("logits", 1)
    t = torch.from_numpy(head)
    bce_floor = float(output_loss("map", None, t[:, 4:], t[:, 4:]))  # the scores' own entropy
    assert float(output_loss("boxscores", (1, 4), t, t)) == pytest.approx(bce_floor, rel=1e-5)
    moved_box, moved_score = t.clone(), t.clone()
    moved_box[:, :4] *= 1.2
    moved_score[:, 5] = 0.9
    assert float(output_loss("boxscores", (1, 4), moved_box, t)) == pytest.approx(bce_floor + 0.04, rel=1e-3)
    assert float(output_loss("boxscores", (1, 4), moved_score, t)) > bce_floor + 0.1


def test_temperature_softens_class_axes_and_leaves_other_kinds_alone():
    t = torch.tensor([[4.0, 1.0, 0.0], [3.0, 2.5, -2.0]])
    s = torch.tensor([[4.0, 0.0, 1.0], [3.0, -2.0, 2.5]])  # the same top class, the others ranked the other way
    # T = 2 by hand: KL between the softmaxes of logits / 2, times 4
    p, q = torch.softmax(t / 2, 1), torch.softmax(s / 2, 1)
    by_hand = 4 * float((p * (p.log() - q.log())).sum(1).mean())
    assert float(output_loss("logits", 1, s, t, temperature=2.0)) == pytest.approx(by_hand, rel=1e-5)
    # probabilities are read back as log-probabilities first: the same figure from the softmaxed outputs
    probs = float(output_loss("probs", 1, torch.softmax(s, 1), torch.softmax(t, 1), temperature=2.0))
    assert probs == pytest.approx(by_hand, rel=1e-4)
    # the runner-up ranking weighs more once softened (T^2 keeps the gradient's size comparable)
    assert by_hand > float(output_loss("logits", 1, s, t)) > 0
    assert float(output_loss("logits", 1, t, t, temperature=3.0)) == pytest.approx(0.0, abs=1e-6)
    for kind in ("mse", "map"):
        a, b = torch.sigmoid(s), torch.sigmoid(t)
        assert float(output_loss(kind, None, a, b, temperature=4.0)) == float(output_loss(kind, None, a, b))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_config_refuses_a_temperature_that_is_not_a_positive_number(bad):
    from onnxcompress.config import CompressConfig
    from onnxcompress.errors import InputError

    with pytest.raises(InputError, match="--distill-temperature must be a finite number above 0"):
        CompressConfig(distill_temperature=bad).validate()


def test_cli_temperature_reaches_the_loss_and_the_report(tmp_path):
    """digits CNN at 0.6x, 30 steps: T = 3 trains other weights than T = 1, and the report says which T ran."""
    import json
    from pathlib import Path

    import onnx
    import onnx.numpy_helper as onh

    from onnxcompress.cli import main

    models = Path(__file__).resolve().parents[2] / "models"
    np.savez(tmp_path / "calib.npz", input=np.load(models / "digits_eval.npz")["x"][:160])
    weights, runs = {}, {}
    for t in ("1", "3"):
        out, rep = tmp_path / f"t{t}.onnx", tmp_path / f"t{t}.json"
        assert main([str(models / "digits_cnn.onnx"), "--calib", str(tmp_path / "calib.npz"), "--target-macs", "0.6",
                     "-q", "--no-simplify", "--recover", "distill", "--distill-steps", "30", "--distill-temperature", t,
                     "-o", str(out), "--report", str(rep)]) == 0
        weights[t] = {i.name: onh.to_array(i) for i in onnx.load(out).graph.initializer}
        runs[t] = json.loads(rep.read_text())["recovery"]["distill"]
    assert (runs["1"]["temperature"], runs["3"]["temperature"]) == (1.0, 3.0)
    assert runs["1"]["losses"] == runs["3"]["losses"] and "logits" in runs["1"]["losses"].values()
    trained = [n for n, a in weights["1"].items() if a.dtype == np.float32 and a.size > 1]
    assert sum(not np.array_equal(weights["1"][n], weights["3"][n]) for n in trained) >= len(trained) // 2

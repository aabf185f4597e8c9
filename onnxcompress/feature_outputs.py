"""Which graph outputs are feature vectors, judged by cosine rather than by the argmax of a class axis.

An output made (past reshapes) by one of these has no class axis, and reading its largest
component as a class is wrong:

- a normalisation or a squashing op (``FEATURE_OPS``): BERT's last_hidden_state and
  pooler_output, a sentence embedding; random-weight BERT's last_hidden_state read as a
  sequence of 768-way class scores agreed nowhere, and the floor refused every compressed model;
- a LayerNorm written out (opset < 17 exports);
- a vector divided by its own norm, written out as torch's ``F.normalize`` exports it
  (``x / Expand(Clip(Pow(ReduceSum(Pow(Abs(x), p)), 1/p)))``): a speaker or face embedding.
  A keyword-spotting ResNet-50's 2048-d embedding was judged by its argmax, and a model whose
  mean cosine was 0.58 was refused on "top-1 agreement 0.40";
- a recurrent layer's hidden or cell state (``LSTM``, ``GRU``, ``RNN``), also when several are
  concatenated: a streaming voice-activity model's (2, N, 128) state was read as a CTC sequence
  and "collapsed" although the speech probability beside it kept a cosine of 0.98.
"""

from __future__ import annotations

FEATURE_OPS = {"LayerNormalization", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization",
               "SimplifiedLayerNormalization", "RMSNormalization", "EmbedLayerNormalization", "LpNormalization", "Tanh",
               "LSTM", "GRU", "RNN"}
_PASS_THROUGH = {"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Cast"}
#: between a norm's reduction and the division: the root, the epsilon guard, the broadcast
_NORM_TAIL = {"Expand", "Clip", "Max", "Add", "Sqrt", "Pow", "Unsqueeze", "Reshape", "Identity", "Cast"}
_NORM_REDUCE = {"ReduceL2", "ReduceL1", "ReduceSum", "ReduceSumSquare"}
#: between the vector and the reduction: |x|, x^p, x * x
_NORM_HEAD = {"Abs", "Pow", "Mul", "Identity", "Cast"}


def feature_outputs(model) -> frozenset[str]:
    """Graph outputs of an onnx-ir model that are feature vectors (module docstring)."""
    return frozenset(v.name for v in model.graph.outputs if _is_feature(v.producer()))


def _is_feature(node, depth: int = 0) -> bool:
    while node is not None and node.op_type in _PASS_THROUGH and node.inputs and node.inputs[0] is not None:
        node = node.inputs[0].producer()
    if node is None or depth > 4:
        return False
    if node.op_type == "Concat":  # states stacked: a feature only if every part is one
        return all(i is not None and _is_feature(i.producer(), depth + 1) for i in node.inputs)
    return node.op_type in FEATURE_OPS or _decomposed_layernorm(node) or _divided_by_own_norm(node)


def _decomposed_layernorm(node) -> bool:
    """``node`` ends an opset < 17 LayerNorm: Add(Mul(Div(Sub(x, ReduceMean(x)), ...), gamma), beta)
    (the Mul or the Add may be missing)."""
    for op in ("Add", "Mul"):
        if node is not None and node.op_type == op:
            node = next((i.producer() for i in node.inputs if i is not None and i.producer() is not None
                         and i.producer().op_type in ("Mul", "Div")), None)
    return layernorm_div(node)


def layernorm_div(node) -> bool:
    """``node`` is the Div of an opset < 17 LayerNorm: Div(Sub(x, ReduceMean(...)), ...)."""
    if node is None or node.op_type != "Div" or node.inputs[0] is None:
        return False
    sub = node.inputs[0].producer()
    return sub is not None and sub.op_type == "Sub" and len(sub.inputs) > 1 and sub.inputs[1] is not None \
        and sub.inputs[1].producer() is not None and sub.inputs[1].producer().op_type == "ReduceMean"


def _divided_by_own_norm(node) -> bool:
    """``node`` is Div(x, d) where d, past its root, guard and broadcast, reduces |x|, x^p or x * x (or
    is ReduceL1 / ReduceL2 / ReduceSumSquare of x). Exp(z) / ReduceSum(Exp(z)), a softmax written out,
    divides by a plain sum of x: class scores, not a norm."""
    if node.op_type != "Div" or len(node.inputs) < 2 or node.inputs[0] is None or node.inputs[1] is None:
        return False
    x, d = node.inputs[0], node.inputs[1].producer()
    while d is not None and d.op_type in _NORM_TAIL and d.inputs and d.inputs[0] is not None:
        d = d.inputs[0].producer()
    if d is None or d.op_type not in _NORM_REDUCE or not d.inputs or d.inputs[0] is None:
        return False
    v, heads = d.inputs[0], 0
    for _ in range(4):
        if v is x:
            return heads > 0 or d.op_type != "ReduceSum"
        p = v.producer()
        if p is None or p.op_type not in _NORM_HEAD or not p.inputs or p.inputs[0] is None:
            return False
        if p.op_type == "Mul" and (len(p.inputs) < 2 or p.inputs[1] is not p.inputs[0]):
            return False  # x * w is a weighted sum; only x * x squares
        heads += p.op_type in ("Abs", "Pow", "Mul")
        v = p.inputs[0]
    return False

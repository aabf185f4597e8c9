"""The sensitivity sweep's candidate runs, each from the cut before the first node it changes.

A candidate of the forward sweep (``sensitivity.measure``) masks one group's channels: it
changes a few mask and shift feeds of the masked model, and every node before the first one
that reads them computes exactly what the unmasked model does. So the groups are measured in
the order of that first node, the unmasked model's *cut* there (every tensor produced before
it that a later node reads) is kept for the sweep's samples and moved forward from group to
group, and each candidate runs only the nodes from the cut to the outputs.

The suffix runs with onnxruntime's graph optimisations on (the whole masked model runs without,
so that no fusion swallows a mask): on a 416x416 detector the sweep took 121 s instead of 171 s,
with the same allocation and drifts within 1e-6 of the unoptimised runs.

The cut is bounded by ``prefix.CUT_BYTES``; past it, or where nodes carry subgraphs, ``run``
returns None and the caller runs the whole masked model as before.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxcompress.pruning import prefix
from onnxcompress.pruning.prefix import has_subgraphs, live_at, needed, run_between, submodel
from onnxcompress.output_join import OutputJoin
from onnxcompress.runtime import Session, feeds_batch, split_feeds


class SuffixRunner:
    """The masked model's outputs for a candidate's feeds, computed from the nearest cut."""

    def __init__(self, proto: onnx.ModelProto, batches: list[dict[str, np.ndarray]],
                 identity: dict[str, np.ndarray]) -> None:
        self.proto = proto
        #: the samples in parts of bounded input bytes, as ``Session.run_all`` runs them
        self.parts = [p for f in batches for p in split_feeds(f)]
        #: the switch feeds (masks, shifts, factors) at their no-op values
        self.identity = identity
        graph = proto.graph
        self.n_nodes = len(graph.node)
        self.first_reader: dict[str, int] = {}
        for i, n in enumerate(graph.node):
            for name in n.input:
                if name in identity:
                    self.first_reader.setdefault(name, i)
        self.outputs = [o.name for o in graph.output]
        self.enabled = bool(self.parts) and not has_subgraphs(graph)
        self._pos: int | None = None
        self._cut: list[dict[str, np.ndarray]] = []
        self._suffix: tuple[int, Session, list[str]] | None = None
        #: candidate runs that started from a cut
        self.resumed = 0

    def start_of(self, feeds: dict[str, np.ndarray]) -> int:
        """Index of the first node that reads a feed differing from its no-op value."""
        changed = [n for n, a in feeds.items() if n in self.identity and not np.array_equal(a, self.identity[n])]
        return min((self.first_reader.get(n, self.n_nodes) for n in changed), default=self.n_nodes)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The outputs over every sample (joined batch-first), or None where no cut can be used."""
        p = self.start_of(feeds)
        if not self.enabled or not self._move_to(p):
            return None
        if self._suffix is None or self._suffix[0] != p:
            available = sorted(set(self._cut[0]) | set(self.identity))
            todo = [o for o in self.outputs if o not in self._cut[0]]
            nodes = needed(self.proto.graph, p, self.n_nodes, todo, set(available))
            sample = {**self._cut[0], **self.identity}
            self._suffix = (p, Session(submodel(self.proto, nodes, available, todo, sample), optimize=True), todo)
        _, session, todo = self._suffix
        switch = {n: feeds.get(n, a) for n, a in self.identity.items()}
        join = OutputJoin([feeds_batch(f) for f in self.parts])
        for cut in self._cut:
            got = session.run({**cut, **switch}, todo) if todo else {}
            join.add({o: (got[o] if o in got else cut[o]) for o in self.outputs})
        self.resumed += 1
        return join.result()

    def _move_to(self, p: int) -> bool:
        """Hold the unmasked model's cut at node ``p`` (from the current cut where it lies before)."""
        if self._pos == p:
            return True
        live = [n for n in live_at(self.proto.graph, p, keep_outputs=True) if n not in self.identity]
        if self._pos is not None and self._pos < p:
            start, inputs, feeds = self._pos, sorted(set(self._cut[0]) | set(self.identity)), self._cut
        else:
            start, inputs, feeds = 0, [v.name for v in self.proto.graph.input], self.parts
        outs = run_between(self.proto, start, p, inputs, live, [{**f, **self.identity} for f in feeds], optimize=False)
        if sum(a.nbytes for o in outs for a in o.values()) > prefix.CUT_BYTES or not all(
                isinstance(a, np.ndarray) for o in outs for a in o.values()):
            self.enabled = False
            self._pos, self._cut = None, []
            return False
        self._pos, self._cut, self._suffix = p, outs, None
        return True

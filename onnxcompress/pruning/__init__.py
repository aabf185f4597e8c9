"""Pruning beside the channel analysis: plan which atoms go, apply the plan, fold constants.

- ``plan``: groups, importance, local/global/allocated selection, round_to;
- ``apply``: zero or remove the planned atoms (``Applier``);
- ``consumer_folding``: fold removed channels' constants into consumers' biases.
"""

"""Channel dependency analysis: which channels of which tensors must be pruned together.

Every channel of every tracked tensor is an *element* with an integer id. Op rules
(``channels.rules``) say how the elements of an op's outputs relate to those of its
inputs: the same ids (identity), ids glued together (coupling), ids concatenated or
sliced (Concat, Split), repeated (Flatten into Gemm) or permuted (channel shuffle).
A union-find merges coupled elements into *atoms*: the unit that is pruned. Weights
and attributes that must shrink with an atom are recorded as *slots*.
"""

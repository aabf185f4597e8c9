"""Static analysis: shapes, parameters, MACs and receptive fields per node."""

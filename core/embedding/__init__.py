"""Normal features and distances to them: the frozen backbones with aggregation and the position
code (features), the memory bank and its coreset (bank), and position-constrained residuals
(residuals). Shared by SemiREST, PatchCore and REB.
"""

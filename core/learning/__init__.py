"""SemiREST's learned part: the residual Swin Transformer (model), its training material (trainset),
the optimisation loop (training), losses, ResMixMatch and box pseudo-masks for weak labels, and the
fusion of the Swin's map with the neighbour distance.
"""

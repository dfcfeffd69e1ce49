"""What the methods read: images and masks, the MVTec folder layout, the block grid, labels (their
kinds, checks, JSON files and annotation-cost estimates), the evaluation protocols, and the label
file formats of other tools (formats/). No torch here.
"""

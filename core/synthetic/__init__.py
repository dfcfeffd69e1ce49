"""Synthetic defects made from normal images: MemSeg-style anomalies (memseg), REB's DefectMaker
and its shapes, HaloAE's CutPaste, and label paste (the user's labelled defects copied onto other
normals), with the mask helpers they share. Used to train and validate without real defects.
"""

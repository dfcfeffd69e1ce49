"""Scoring a model: the metrics, the anomaly map's post-processing and colours (anomaly_map; no
torch, the viewer imports it), per-model calibration, validation on real labelled defects
(realval), and the ranking of which image to label next (nextlabel).
"""

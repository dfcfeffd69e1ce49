"""A trained model outside training: the self-contained model file (modelfile), inference on images
(inference), and export of the whole inference path to ONNX / OpenVINO (export, exportgraph).
"""

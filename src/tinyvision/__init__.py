"""tinyvision: labelled images to int8 image models verified on TensorFlow Lite Micro."""

__version__ = "0.1.0"

"""Deployment: int8 LiteRT conversion, the int8 model's outputs, reference and TFLM runners,
verification on TFLM, C source."""

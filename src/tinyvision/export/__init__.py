"""Export: int8 LiteRT model, C source for it, float Keras model."""

"""Data: annotation sources -> manifest -> decoded-image cache -> tf.data pipeline."""

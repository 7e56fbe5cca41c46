"""Training: two-stage transfer learning, callbacks and logs."""

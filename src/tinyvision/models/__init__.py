"""Models: backbones (registry) and heads, assembled by `build.build_model`."""

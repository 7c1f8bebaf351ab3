"""Model file formats: one module per format, each reading into / writing from the IR."""

"""Shipped example: a float LeNet-5 (ONNX) and MNIST slices, installed as edgeconv.examples
so `edgeconv demo` finds them."""

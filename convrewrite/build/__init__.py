"""Reading and writing the two IRs the lowerings run on: ONNX (onnx-graphsurgeon) and Relax."""

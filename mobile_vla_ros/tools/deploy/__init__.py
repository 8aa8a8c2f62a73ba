"""From a checkpoint to the robot: ONNX export and the TensorRT engine build."""

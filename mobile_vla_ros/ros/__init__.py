"""rclpy glue: message conversion, parameter declaration, diagnostics."""

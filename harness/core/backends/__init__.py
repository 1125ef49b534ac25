"""The arithmetic beneath `ModelRunner.run_layers`, chosen once when the runner is built."""

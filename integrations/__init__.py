"""The harness inside other tools."""

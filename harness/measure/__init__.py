"""Measuring the machine and a generation: timing, memory telemetry, the bandwidth floor, device facts, doctor."""

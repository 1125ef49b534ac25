"""Checking outputs against the reference: token parity under greedy decoding, the distribution under sampling."""

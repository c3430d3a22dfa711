"""The gateway measured: load and fault tests on loopback (`python -m eval.gateway.load`)."""

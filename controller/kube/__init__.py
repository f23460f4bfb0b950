"""Talking to the Kubernetes API: client construction, raw JSON calls, error translation."""

"""Informer caches: a reflector keeps a store in step with the API server and calls handlers."""

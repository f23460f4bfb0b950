"""Lease-based leader election (coordination.k8s.io/v1), with client-go's semantics.

* :mod:`.lease`    the pure half: the Lease record, when it counts as expired, what to do
  with it and what to write (no I/O, no clock reads, no Kubernetes client);
* :mod:`.elector`  :class:`~controller.leaderelection.elector.LeaderElector`, the async loop
  that reads and writes the Lease, renews it, and gives it up.
"""

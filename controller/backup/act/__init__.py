"""The backup manager's I/O: one module per reconcile step, each thin around a decider.

Guarantees:

* every write to the API server goes through :class:`.deps.Deps` (``api``, ``status``,
  ``events``, ``lock``), and every decision is taken by a pure function of
  :mod:`controller.backup.decide`;
* a step raises :mod:`controller.errors` exceptions (or, for a bug, anything); it never
  swallows one to hide it: the reconciler (:mod:`controller.reconcilers.backups`) classifies
  each failure once (:mod:`controller.backup.decide.failures`) and surfaces it.

Steps, in reconcile order: :mod:`.deletion`, :mod:`.running`, :mod:`.outcome`,
:mod:`.planning`, :mod:`.launch`, :mod:`.bookkeeping`; the operation lock's whole lifecycle is
:mod:`.lock`; :mod:`.probe` reads OpenBao's health; :mod:`.status` writes status.
"""

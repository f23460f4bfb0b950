"""The backup manager: deciding (:mod:`.decide`, pure) and doing (:mod:`.act`, I/O).

The reconcile loop that drives both is :mod:`controller.reconcilers.backups`.
"""

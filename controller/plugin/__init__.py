"""The ``kubectl openbao-backup`` plugin: a thin client of the CRDs (see :mod:`.main`).

Layers: :mod:`.views` is pure (objects to text), :mod:`.commands` does the API calls,
:mod:`.main` parses arguments. The plugin talks only to the API server: it creates
OpenBaoBackups and OpenBaoRestores and reads status, so the trigger-only role is enough.
"""

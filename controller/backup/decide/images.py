"""Which images the controller puts into a pod: its own, and those its operator trusts.

Editing an OpenBaoCluster chooses what the executor Job mounts (the Secrets its spec names);
if it could also choose the image, it would choose the program those Secrets are handed to.
So the controller runs only images it was configured to trust, whoever wrote the cluster.

The rule (``--executor-image-allowlist``, :class:`controller.settings.Settings`):

* an image reference is allowed when it is one of the controller's own defaults (its
  ``--executor-image``, and the restore drill's built-in scratch OpenBao image
  :data:`~.drill.DEFAULT_OPENBAO_IMAGE` for ``spec.backup.verify.openbaoImage``), or when it
  equals an allowlist entry, or when an entry ending in ``*`` is a prefix of it (the settings
  accept ``*`` only right after ``/``, ``:`` or ``@``: ``ghcr.io/acme/openbao-backup@sha256:*``
  trusts every digest of that repository, ``registry.acme.internal/openbao/*`` a whole path,
  never ``ghcr.io/acme/openbao-backup-evil``); ``*`` alone trusts every image (no check);
* references are compared as written, case-sensitively and without normalisation
  (``openbao-backup:1`` is not ``docker.io/library/openbao-backup:1``);
* the allowlist applies to every image of every Job the controller creates: the executor
  container (``spec.backup.executor.image``) of backup, delete, verify, restore and drill Jobs,
  and the drill's scratch OpenBao container (``spec.backup.verify.openbaoImage``).

Guarantees:

* pure and total; :meth:`ImagePolicy.problems` lists every untrusted image of a backup spec
  (each naming the field), :meth:`ImagePolicy.executor_image` and
  :meth:`ImagePolicy.openbao_image` return the image to run or raise :class:`ImageNotAllowed`
  (a :class:`~.spec.SpecError`, so nothing is launched), which :mod:`.failures` classifies as
  the terminal reason :data:`IMAGE_NOT_ALLOWED`.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.backup.decide.drill import DEFAULT_OPENBAO_IMAGE
from controller.backup.decide.spec import BackupSpec, SpecError

IMAGE_NOT_ALLOWED = "ExecutorImageNotAllowed"
"""The failure reason (record ``failureReason``, Warning event) of a Job refused for its image."""
EXECUTOR_IMAGE_FIELD = "spec.backup.executor.image"
OPENBAO_IMAGE_FIELD = "spec.backup.verify.openbaoImage"


class ImageNotAllowed(SpecError):
    """A spec names an image the controller does not run; the message names the field."""


def matches(image: str, entry: str) -> bool:
    """``image`` equals ``entry``, or ``entry`` ends in ``*`` and the rest is a prefix of it."""
    if entry.endswith("*"):
        return image.startswith(entry[:-1])
    return image == entry


@dataclass(frozen=True)
class ImagePolicy:
    """The controller's executor image and the images it trusts besides its defaults."""

    default: str
    """``--executor-image``: used when ``spec.backup.executor.image`` is unset, always trusted."""
    allowlist: tuple[str, ...] = ()

    def allows(self, image: str, *, builtin: str | None = None) -> bool:
        """``image`` is ``builtin`` (the field's own default), or on the allowlist."""
        if image == builtin:
            return True
        return any(matches(image, entry) for entry in self.allowlist)

    def _problem(self, field: str, image: str) -> str:
        trusted = ", ".join(repr(e) for e in self.allowlist) or "none"
        return (
            f"{field}: {image!r} is not an image this controller runs; it runs its own "
            f"executor image {self.default!r} and the images of its --executor-image-allowlist "
            f"(entries: {trusted}). Unset the field, or ask the controller's operator to trust "
            "the image"
        )

    def problems(self, backup: BackupSpec | None) -> list[str]:
        """Every untrusted image of ``backup`` (``[]``: nothing to refuse)."""
        if backup is None:
            return []
        out: list[str] = []
        requested = backup.executor.image
        if requested is not None and not self.allows(requested, builtin=self.default):
            out.append(self._problem(EXECUTOR_IMAGE_FIELD, requested))
        verify = backup.verify
        if verify is not None and not self.allows(
            verify.openbao_image, builtin=DEFAULT_OPENBAO_IMAGE
        ):
            out.append(self._problem(OPENBAO_IMAGE_FIELD, verify.openbao_image))
        return out

    def executor_image(self, requested: str | None) -> str:
        """The executor container's image: ``requested`` if trusted, the default if unset."""
        if requested is None:
            return self.default
        if not self.allows(requested, builtin=self.default):
            raise ImageNotAllowed([self._problem(EXECUTOR_IMAGE_FIELD, requested)])
        return requested

    def openbao_image(self, requested: str) -> str:
        """The drill's scratch OpenBao image, if trusted."""
        if not self.allows(requested, builtin=DEFAULT_OPENBAO_IMAGE):
            raise ImageNotAllowed([self._problem(OPENBAO_IMAGE_FIELD, requested)])
        return requested


def policy_of(image: str | ImagePolicy) -> ImagePolicy:
    """A policy; a plain image reference trusts that image alone (its own default)."""
    return image if isinstance(image, ImagePolicy) else ImagePolicy(default=image)

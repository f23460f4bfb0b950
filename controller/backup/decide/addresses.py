"""Addresses the controller probes and the executor connects to: never link-local or metadata.

``spec.address`` (OpenBao) is probed by the controller itself (unauthenticated GETs of
``sys/health`` and ``sys/leader``, whose answers shape conditions and events) and, with the
executor's credentials, by the executor; ``spec.backup.target.endpoint`` (storage) receives the
executor's storage credentials. Pointed at a cloud metadata service they would make the
controller a network probe of its own node's metadata (and the executor a courier of
credentials to it), so such addresses are refused unless the object opts out explicitly with
``spec.allowLinkLocalAddresses: true``.

Refused (in ``http(s)://host[:port][/path]``, the host compared case-insensitively, a trailing
dot ignored):

* link-local addresses: IPv4 ``169.254.0.0/16`` (AWS, GCP, Azure, OpenStack, ECS metadata) and
  IPv6 ``fe80::/10``;
* the metadata addresses outside them: ``fd00:ec2::254`` (AWS IPv6), ``100.100.100.200``
  (Alibaba Cloud);
* metadata host names: ``metadata`` and ``instance-data`` alone, with ``.goog``, or followed
  by any labels ending in ``.internal`` (``metadata.google.internal``,
  ``instance-data.ec2.internal``);
* IP addresses in any form but the canonical one, which resolvers would still turn into an
  address (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``, ``169.254.43518``, IPv4-mapped
  IPv6 such as ``[::ffff:169.254.169.254]``), and hosts with ``%`` escapes or non-ASCII
  characters (write IDNs in punycode).

Guarantees:

* the three patterns below are, character for character, the ones in the CRD's admission rules
  (tests/manifests/test_addresses.py compares them and runs one table through both the API
  server and :func:`address_problems`);
* :func:`address_problems` is pure and total; beyond the patterns it parses the host with
  :mod:`ipaddress`, so an object written before the admission rule, with validation bypassed,
  is refused too (then the cluster is ``ConfigValid=False`` and nothing is probed or launched);
* a host NAME that resolves to a refused address cannot be seen without DNS and is not
  refused here (restrict the controller's egress with a NetworkPolicy for that).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

ALLOW_FIELD = "allowLinkLocalAddresses"
"""The opt-out: ``spec.allowLinkLocalAddresses: true`` on the OpenBaoCluster."""

_METADATA_NAME = r"(metadata|instance-data)(([.][a-z0-9-]+)*[.]internal|[.]goog)?"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_REST = r"[.]?(:[0-9]*)?(/.*)?$"
FORBIDDEN_ADDRESS_PATTERN = (
    r"(?i)^https?://("
    rf"((169[.]254[.][0-9]+[.][0-9]+|100[.]100[.]100[.]200)|{_METADATA_NAME}){_REST[:-1]}"
    r"|\[(fe[89ab][0-9a-f]:|fd00:0*ec2:[0:]*0*254\]|[0:]*:ffff:).*"
    r"|[^/]*([%]|[^ -~]).*"
    r")$"
)
"""A URL whose host is a link-local or metadata address or name, an IPv4-mapped IPv6 address, or
has ``%`` escapes or non-ASCII characters."""
NUMERIC_HOST_PATTERN = r"(?i)^https?://((0x[0-9a-f]*|[0-9]+)[.]?){1,4}(:[0-9]*)?(/.*)?$"
"""A URL whose host a resolver reads as an IPv4 address (``inet_aton``: 1-4 decimal, octal or
hexadecimal parts)."""
CANONICAL_IPV4_PATTERN = rf"(?i)^https?://{_OCTET}([.]{_OCTET}){{3}}{_REST}"
"""A URL whose host is a dotted-quad IPv4 address without leading zeros."""

_FORBIDDEN = re.compile(FORBIDDEN_ADDRESS_PATTERN)
_NUMERIC = re.compile(NUMERIC_HOST_PATTERN)
_CANONICAL = re.compile(CANONICAL_IPV4_PATTERN)
_METADATA_HOST = re.compile(rf"(?i){_METADATA_NAME}")
_ALIBABA = ipaddress.ip_address("100.100.100.200")
_AWS_V6 = ipaddress.ip_address("fd00:ec2::254")

RULE = (
    "a link-local or cloud-metadata address (169.254.0.0/16, fe80::/10, fd00:ec2::254, "
    "100.100.100.200, metadata, metadata.google.internal, instance-data...), an IP address in "
    "a non-canonical form, or a host with '%' or non-ASCII characters; the controller does not "
    "probe such an address and the executor does not connect to it. Set "
    "spec.allowLinkLocalAddresses: true to allow it"
)


def refused(url: str) -> bool:
    """``url`` points at a link-local or metadata address (see the module's rule)."""
    if _FORBIDDEN.search(url) or (_NUMERIC.search(url) and not _CANONICAL.search(url)):
        return True
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return False  # not a URL at all: other checks say so
    if not host:
        return False
    host = host.rstrip(".")
    if "%" in host or not host.isascii():
        return True
    if _METADATA_HOST.fullmatch(host):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return True
    return ip.is_link_local or ip in (_ALIBABA, _AWS_V6)


def address_problems(*, path: str, address: object, allow: bool) -> list[str]:
    """Problems of ``address`` at ``path`` (none when ``allow`` or when it is unset)."""
    if allow or not isinstance(address, str) or not address:
        return []
    return [f"{path}: {address!r} is {RULE}"] if refused(address) else []

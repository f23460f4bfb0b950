"""Link-local and metadata addresses in the spec parsers (issue 11: the preflight as a network
probe). The same table runs through the real API server in tests/manifests/test_addresses.py."""

from __future__ import annotations

from typing import Any

import pytest

from controller.backup.decide.addresses import address_problems, refused
from controller.backup.decide.spec import SpecError, parse_cluster

REFUSED = [
    "http://169.254.169.254",
    "http://169.254.169.254/latest/meta-data/",
    "https://169.254.170.2:443",  # ECS task metadata
    "http://169.254.169.254.:80/",  # trailing dot
    "HTTP://169.254.169.254",
    "http://100.100.100.200/",  # Alibaba Cloud
    "http://[fe80::1]:8200",
    "http://[FE80::a:b:c:d]",
    "http://[febf::1]",
    "http://[fe80::1%25eth0]:8200",  # with a zone
    "http://[fd00:ec2::254]/",  # AWS IPv6
    "http://[fd00:0ec2:0:0:0:0:0:0254]/",
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",
    "http://2852039166/",  # 169.254.169.254 as one decimal number
    "http://0xa9fea9fe/",
    "http://0xa9.0xfe.0xa9.0xfe/",
    "http://0251.0376.0251.0376/",  # octal
    "http://169.254.43518/",
    "http://010.0.0.1:8200",  # leading zero: octal to a resolver
    "http://metadata",
    "http://metadata:80/computeMetadata/v1/",
    "http://metadata.google.internal",
    "http://METADATA.Google.Internal./",
    "http://metadata.goog",
    "http://instance-data",
    "http://instance-data.ec2.internal/latest",
    "http://169%2e254.169.254/",  # percent-escaped
    "http://169\u3002254\u3002169\u3002254/",  # ideographic full stops: IDNA maps them to '.'
]
ADMITTED = [
    "https://vault.openbao.svc:8200",
    "https://openbao.example.com",
    "http://127.0.0.1:8200",
    "http://[::1]:8200",
    "http://10.0.0.1/",
    "http://169.255.0.1/",
    "http://[fec0::1]/",  # site-local, not link-local
    "http://[fd00:ec2::253]/",
    "http://1.2.3.4.nip.io/",  # a name (whatever it resolves to is not visible here)
    "http://openbao-0/",
    "http://metadata.google.internal.example.com/",
    "http://metadata-service.team-a.svc:8080/",
    "http://1e100.net/",
    "https://s3.eu-central-1.amazonaws.com",
    "http://127.0.0.1:10000/devstoreaccount1",
]


@pytest.mark.parametrize("url", REFUSED)
def test_link_local_and_metadata_addresses_are_refused(url: str) -> None:
    assert refused(url)


@pytest.mark.parametrize("url", ADMITTED)
def test_ordinary_addresses_are_admitted(url: str) -> None:
    assert not refused(url)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://169.254.169.254/",  # not http(s): the patterns do not apply, the host check does
        "https://[fe80::1]",
        "http://[::ffff:10.0.0.1]/",  # every IPv4-mapped address: write the IPv4 address
    ],
)
def test_the_parser_looks_at_the_host_beyond_the_admission_patterns(url: str) -> None:
    assert refused(url)


def cluster(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "vault", "namespace": "team-a", "uid": "u"},
        "spec": {
            "backup": {
                "target": {"provider": "s3", "bucket": "b"},
                "auth": {"jwt": {"role": "backup"}},
            },
            **spec,
        },
    }


def test_a_cluster_written_before_the_admission_rule_is_not_acted_on() -> None:
    """ConfigValid=False naming the field, and no probe: the reconcile never reaches launch
    for a cluster whose spec does not parse."""
    with pytest.raises(SpecError) as info:
        parse_cluster(cluster(address="http://169.254.169.254"))
    (problem,) = info.value.problems
    assert problem.startswith("spec.address: 'http://169.254.169.254' is a link-local")
    assert "spec.allowLinkLocalAddresses: true" in problem

    body = cluster(address="http://[fd00:ec2::254]")
    body["spec"]["backup"]["target"]["endpoint"] = "http://metadata.google.internal"
    with pytest.raises(SpecError) as info:
        parse_cluster(body)
    fields = [p.split(":", 1)[0] for p in info.value.problems]
    assert fields == ["spec.address", "spec.backup.target.endpoint"]


def test_the_opt_out_admits_them() -> None:
    body = cluster(address="http://169.254.20.10:8200", allowLinkLocalAddresses=True)
    body["spec"]["backup"]["target"]["endpoint"] = "http://169.254.20.11:9000"
    parsed = parse_cluster(body)
    assert parsed.address == "http://169.254.20.10:8200"
    assert (
        parsed.backup is not None and parsed.backup.target.endpoint == "http://169.254.20.11:9000"
    )
    # only the boolean true opts out
    body["spec"]["allowLinkLocalAddresses"] = "true"
    with pytest.raises(SpecError):
        parse_cluster(body)


def test_the_default_address_and_ordinary_ones_parse() -> None:
    assert parse_cluster(cluster()).address == "https://vault.team-a.svc:8200"
    assert parse_cluster(cluster(address="http://127.0.0.1:8200")).address.endswith(":8200")
    assert address_problems(path="x", address=None, allow=False) == []
    assert address_problems(path="x", address="", allow=False) == []

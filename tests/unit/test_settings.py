"""The desired-properties model (SPEC 3)."""

from __future__ import annotations

import pytest

from connected_registry.settings import ConfigInvalid, DesiredProperties, parse_duration, validate_desired


def test_defaults_are_spec_defaults():
    settings = validate_desired({})
    assert settings.mode == "ReadOnly"
    assert settings.parent is None and settings.repositories == [] and settings.tokens == {}
    assert settings.onDemand is True and settings.cache.maxBytes == "80%"
    assert settings.platforms is None and settings.wanted_platforms is None  # every platform
    assert settings.anonymousPull is False and settings.reportInterval == "PT5M"
    assert settings.logging.logLevel == "Information"
    assert settings.garbageCollection.enabled and settings.garbageCollection.schedule == "0 5 * * *"


def test_parent_defaults():
    parent = validate_desired({"parent": {"endpoint": "$upstream"}}).parent
    assert parent.kind == "auto" and parent.syncProperties.schedule == "* * * * *"
    assert parent.syncProperties.messageTtl == "P2D" and parent.syncProperties.syncWindow is None
    assert parent.connectTimeout == "PT3S" and parent.firstByteTimeout == "PT10S"
    assert parent.alternateEndpoints == [] and parent.failbackInterval == "PT5M"


@pytest.mark.parametrize("document,field", [
    ({"name": "abc"}, "name"),
    ({"name": "1abcdef"}, "name"),
    ({"mode": "Mirror"}, "mode"),
    ({"parent": {"syncProperties": {"schedule": "0 9 * * *"}}}, "syncWindow is required"),
    ({"parent": {"syncProperties": {"schedule": "0 9 * * *", "syncWindow": "PT30M"}}}, "syncWindow"),
    ({"parent": {"syncProperties": {"syncWindow": "P8D"}}}, "syncWindow"),
    ({"parent": {"syncProperties": {"messageTtl": "PT12H"}}}, "messageTtl"),
    ({"parent": {"syncProperties": {"messageTtl": "P91D"}}}, "messageTtl"),
    ({"parent": {"syncProperties": {"schedule": "* * * * * *"}}}, "schedule"),
    ({"parent": {"endpoint": "ftp://x"}}, "endpoint"),
    ({"parent": {"kind": "weird"}}, "kind"),
    ({"parent": {"alternateEndpoints": ["ftp://x"]}}, "alternateEndpoints"),
    ({"parent": {"alternateEndpoints": "https://p2:8000"}}, "alternateEndpoints"),
    ({"parent": {"endpoint": "https://p:8000", "alternateEndpoints": ["https://p:8000/"]}}, "must differ"),
    ({"parent": {"alternateEndpoints": [f"p{n}:8000" for n in range(9)]}}, "alternateEndpoints"),
    ({"parent": {"failbackInterval": "PT0.5S"}}, "failbackInterval"),
    ({"repositories": ["UPPER"]}, "repositories"),
    ({"repositories": ["a/*/b"]}, "repositories"),
    ({"onDemand": "sometimes"}, "onDemand"),
    ({"platforms": []}, "leave platforms out"),
    ({"platforms": ["linux"]}, "platforms.0: 'linux' is not a platform: write os/architecture[/variant]"),
    ({"platforms": ["linux/arm64", "Linux/AMD64"]}, "platforms.1"),
    ({"platforms": ["linux/arm/v7/extra"]}, "platforms.0"),
    ({"platforms": "linux/arm64"}, "platforms"),
    ({"cache": {"maxBytes": "120%"}}, "maxBytes"),
    ({"cache": {"maxBytes": -1}}, "maxBytes"),
    ({"tokens": {"abc": {"passwordHashes": ["scrypt$1$1$1$a$b"]}}}, "token name"),
    ({"tokens": {"abcde": {"passwordHashes": ["plaintext"]}}}, "scrypt"),
    ({"tokens": {"abcde": {"passwordHashes": ["scrypt$1$1$1$a$b"] * 3}}}, "passwordHashes"),
    ({"tokens": {"abcde": {"passwordHashes": ["scrypt$1$1$1$a$b"], "actions": ["repositories/a/pull"]}}}, "actions"),
    ({"trustedProxies": ["not-an-ip"]}, "trustedProxies"),
    ({"reportInterval": "5 minutes"}, "reportInterval"),
    ({"logging": {"logLevel": "Verbose"}}, "logLevel"),
    ({"garbageCollection": {"schedule": "daily"}}, "schedule"),
    ({"garbageCollection": {"schedule": "0 0 30 2 *"}}, "never fires"),
    ({"parent": {"syncProperties": {"schedule": "R 9 * * *", "syncWindow": "PT1H"}}}, "schedule"),
])
def test_bad_documents_name_the_field(document, field):
    with pytest.raises(ConfigInvalid) as raised:
        validate_desired(document)
    assert field in str(raised.value)


def test_every_bad_field_is_named_at_once():
    with pytest.raises(ConfigInvalid) as raised:
        validate_desired({"mode": "X", "reportInterval": "Y", "anonymousPull": "maybe"})
    assert len(raised.value.problems) == 3


def test_unknown_keys_are_kept_for_reporting_and_twin_metadata_is_ignored():
    settings = validate_desired({"$version": 7, "futureKey": 1, "mode": "ReadWrite"})
    assert settings.unknown_keys == ["futureKey"] and settings.mode == "ReadWrite"


def test_valid_full_document():
    settings = validate_desired({
        "name": "factory-line-1", "mode": "ReadWrite",
        "parent": {"endpoint": "https://parent:8000", "kind": "connected", "syncToken": {"name": "line1-sync"},
                   "alternateEndpoints": ["$upstream:8001", "http://10.0.0.2:8000"], "failbackInterval": "PT1M",
                   "syncProperties": {"schedule": "0 9 * * *", "syncWindow": "PT3H", "messageTtl": "P7D"}},
        "repositories": ["hello-world", "factory/*", "*"], "onDemand": "windowOnly", "cache": {"maxBytes": 10 << 30},
        "platforms": ["linux/arm64", "linux/arm/v7"],
        "trustedProxies": ["10.0.0.0/8", "192.168.1.1"], "reportInterval": "PT1M",
        "logging": {"logLevel": "Debug"}, "garbageCollection": {"enabled": False, "schedule": "0 3 * * 0"},
    })
    assert isinstance(settings, DesiredProperties) and settings.parent.syncToken.name == "line1-sync"
    assert [str(platform) for platform in settings.wanted_platforms] == ["linux/arm64", "linux/arm/v7"]


def test_durations():
    assert parse_duration("PT1H").total_seconds() == 3600
    assert parse_duration("P1DT12H").total_seconds() == 36 * 3600
    assert parse_duration("P2W").days == 14
    assert parse_duration("PT0.5S").total_seconds() == 0.5
    for bad in ("P", "PT", "1H", "P1Y", "-PT1H"):
        with pytest.raises(ValueError):
            parse_duration(bad)

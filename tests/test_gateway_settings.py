"""Gateway settings: environment parsing, the default database, and production-mode refusals."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from connectors.synth.keys import DEMO_MARKER as SYNTH_DEMO_MARKER
from gateway.settings import DEMO_MARKER, GatewaySettings, SettingsError, get_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FEDGATE_* variable of the developer's shell may leak into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("FEDGATE_") and not name.startswith("FEDGATE_TEST_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def production_files(directory: Path) -> dict[str, Path]:
    """Files a production gateway needs; TLS files only have to exist for the settings check."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "signing_key_file": directory / "gateway.key",
        "tls_cert_file": directory / "gateway.crt",
        "tls_key_file": directory / "gateway-tls.key",
        "tls_client_ca_file": directory / "ca.crt",
    }
    files["signing_key_file"].write_bytes(_pem(Ed25519PrivateKey.generate()))
    for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
        files[name].write_text("-----BEGIN PLACEHOLDER-----\n", encoding="ascii")
    return files


def production(tmp_path: Path, **overrides: object) -> GatewaySettings:
    fields: dict[str, object] = {"mode": "production", "state_dir": tmp_path / "state"}
    fields.update(production_files(tmp_path / "keys"))
    fields.update(overrides)
    return GatewaySettings.model_validate(fields)


def test_defaults_in_development(tmp_path: Path) -> None:
    settings = GatewaySettings()
    assert settings.mode == "development"
    assert (settings.host, settings.port) == ("127.0.0.1", 8700)
    assert settings.window_epsilon == Decimal(10) and isinstance(settings.window_epsilon, Decimal)
    assert settings.multi_year_epsilon == Decimal(30)
    assert settings.default_analyst_quota == Decimal(5)
    assert settings.metrics_enabled is True
    assert settings.database_url_resolved() == f"sqlite:///{Path('.fedgate').resolve() / 'gateway.sqlite3'}"
    settings.check_production()  # development: no refusal


def test_default_database_is_sqlite_under_state_dir(tmp_path: Path) -> None:
    settings = GatewaySettings(state_dir=tmp_path / "state")
    assert settings.database_url_resolved() == f"sqlite:///{tmp_path.resolve() / 'state' / 'gateway.sqlite3'}"
    url = "postgresql+psycopg://fedgate:s3cret-generated@db:5432/fedgate"
    assert GatewaySettings(database_url=url).database_url_resolved() == url


def test_environment_variables_with_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDGATE_MODE", "production")
    monkeypatch.setenv("FEDGATE_WINDOW_EPSILON", "2.5")
    monkeypatch.setenv("FEDGATE_MULTI_YEAR_EPSILON", "7.5")
    monkeypatch.setenv("FEDGATE_DEFAULT_ANALYST_QUOTA", "0.1")
    monkeypatch.setenv("FEDGATE_PORT", "9443")
    monkeypatch.setenv("FEDGATE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("FEDGATE_DATABASE_URL", "")  # set but empty: the default database
    monkeypatch.setenv("FEDGATE_METRICS_ENABLED", "false")
    settings = get_settings()
    assert settings.mode == "production"
    assert settings.window_epsilon == Decimal("2.5")
    assert settings.multi_year_epsilon == Decimal("7.5")
    assert settings.default_analyst_quota == Decimal("0.1")
    assert settings.port == 9443
    assert settings.metrics_enabled is False
    assert settings.database_url is None
    assert settings.database_url_resolved().endswith(f"{tmp_path.resolve()}/gateway.sqlite3")
    # Cached: built once per process until the cache is cleared.
    monkeypatch.setenv("FEDGATE_PORT", "9444")
    assert get_settings() is settings
    get_settings.cache_clear()
    assert get_settings().port == 9444
    # Explicit arguments win over the environment (how tests build settings).
    assert GatewaySettings(port=1234, mode="development").port == 1234


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"window_epsilon": "0"}, "greater than 0"),
        ({"window_epsilon": "10", "multi_year_epsilon": "5"}, "multi_year_epsilon (5) is below"),
        ({"default_analyst_quota": "11"}, "exceeds window_epsilon"),
        ({"port": 0}, "greater than or equal to 1"),
        ({"mode": "staging"}, "development"),
    ],
)
def test_invalid_values_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GatewaySettings.model_validate(fields)


def test_no_analyst_quota_is_allowed() -> None:
    assert GatewaySettings(default_analyst_quota=None).default_analyst_quota is None


def test_unparseable_database_url_does_not_echo_it() -> None:
    with pytest.raises(ValidationError) as info:
        GatewaySettings(database_url="not a url with hunter2-password")
    assert "hunter2" not in str(info.value)
    assert "postgresql+psycopg://" in str(info.value)


def test_complete_production_settings_pass(tmp_path: Path) -> None:
    production(tmp_path).check_production()
    production(
        tmp_path, database_url="postgresql+psycopg://fedgate:Xq93-long-generated@db/fedgate"
    ).check_production()


def test_production_refuses_missing_tls(tmp_path: Path) -> None:
    settings = production(tmp_path, tls_cert_file=None, tls_key_file=None)
    with pytest.raises(SettingsError) as info:
        settings.check_production()
    message = str(info.value)
    assert "FEDGATE_TLS_CERT_FILE is unset" in message
    assert "FEDGATE_TLS_KEY_FILE is unset" in message
    assert "SIGNING_KEY" not in message  # only what is actually wrong is listed
    with pytest.raises(SettingsError, match="FEDGATE_TLS_CLIENT_CA_FILE is unset"):
        production(tmp_path, tls_client_ca_file=None).check_production()
    with pytest.raises(SettingsError, match="which is not a file"):
        production(tmp_path, tls_cert_file=tmp_path / "nowhere.crt").check_production()


def test_production_refuses_unset_or_missing_signing_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="FEDGATE_SIGNING_KEY_FILE is unset"):
        production(tmp_path, signing_key_file=None).check_production()
    with pytest.raises(SettingsError, match="not a file"):
        production(tmp_path, signing_key_file=tmp_path / "missing.key").check_production()
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key", encoding="ascii")
    with pytest.raises(SettingsError, match="not an unencrypted PEM private key"):
        production(tmp_path, signing_key_file=garbage).check_production()
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(SettingsError, match="not an Ed25519 key"):
        production(tmp_path, signing_key_file=ec_key).check_production()


def test_production_refuses_demo_keys(tmp_path: Path) -> None:
    assert DEMO_MARKER == SYNTH_DEMO_MARKER  # the same marker the demo key generator writes
    demo = tmp_path / "demo-keys"
    demo.mkdir()
    (demo / DEMO_MARKER).write_text("demo\n", encoding="ascii")
    key = demo / "gateway.key"
    key.write_bytes(_pem(Ed25519PrivateKey.generate()))
    with pytest.raises(SettingsError, match="is a demo key"):
        production(tmp_path, signing_key_file=key).check_production()
    # A development gateway may use them.
    GatewaySettings(signing_key_file=key).check_production()


def test_production_lists_every_problem_at_once(tmp_path: Path) -> None:
    settings = GatewaySettings(mode="production", state_dir=tmp_path)
    with pytest.raises(SettingsError) as info:
        settings.check_production()
    message = str(info.value)
    for variable in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE", "SIGNING_KEY_FILE"):
        assert f"FEDGATE_{variable} is unset" in message


def test_production_refuses_placeholder_database_password(tmp_path: Path) -> None:
    settings = production(tmp_path, database_url="postgresql+psycopg://fedgate:changethis@db:5432/fedgate")
    with pytest.raises(SettingsError, match="placeholder password") as info:
        settings.check_production()
    assert "changethis" not in str(info.value)


def test_every_setting_is_documented_for_operators() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "deployment.md").read_text(encoding="utf-8")
    missing = [f for f in GatewaySettings.model_fields if f"FEDGATE_{f.upper()}" not in doc]
    assert not missing, f"settings without documentation in docs/deployment.md: {missing}"

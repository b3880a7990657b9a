from pathlib import Path

import pytest

from callcenter.config import Mode, SettingsError, load_settings


def test_production_without_secret_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLCENTER_SECRET_KEY", raising=False)
    monkeypatch.setenv("CALLCENTER_MODE", "production")
    with pytest.raises(SettingsError, match="CALLCENTER_SECRET_KEY"):
        load_settings()


@pytest.mark.parametrize("secret", ["change-me", "demo-secret-not-for-production", "secret"])
def test_production_with_sample_secret_refuses_to_start(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("CALLCENTER_MODE", "production")
    monkeypatch.setenv("CALLCENTER_SECRET_KEY", secret)
    with pytest.raises(SettingsError, match="CALLCENTER_SECRET_KEY"):
        load_settings()


def test_demo_mode_gets_a_demo_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLCENTER_MODE", "demo")
    monkeypatch.delenv("CALLCENTER_SECRET_KEY", raising=False)
    settings = load_settings()
    assert settings.mode is Mode.DEMO
    assert settings.secret_key.get_secret_value()


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("CALLCENTER_WEB_PORT", "eighty"),
        ("CALLCENTER_WEB_PORT", "70000"),
        ("CALLCENTER_LOG_LEVEL", "LOUD"),
        ("CALLCENTER_DEFAULT_REGION", "XX"),
        ("CALLCENTER_DATABASE_URL", "not a url"),
        ("CALLCENTER_MODE", "staging"),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv("CALLCENTER_MODE", "dev")
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert var in str(info.value)


def test_defaults_bind_loopback_8035_and_sqlite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CALLCENTER_MODE", "dev")
    monkeypatch.delenv("CALLCENTER_DATABASE_URL", raising=False)
    monkeypatch.setenv("CALLCENTER_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 8035)
    assert settings.effective_database_url == f"sqlite:///{tmp_path.resolve()}/callcenter.db"


def test_readme_documents_every_setting() -> None:
    from pathlib import Path

    from callcenter.config import settings_table

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [name for name, _, _ in settings_table() if f"`{name}`" not in readme]
    assert not missing, f"README settings table lacks {missing}"

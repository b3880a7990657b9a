"""One translation table: Chinese is complete, and every key the templates and scripts use exists and
reaches the page that needs it."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import WebHarness
from webui import i18n
from webui.routes import admin_pages, pages, task_pages, workstation

WEBUI = Path(i18n.__file__).parent


def test_every_key_has_english_and_chinese() -> None:
    for key, entry in i18n.TABLE.items():
        assert entry.get("en", "").strip(), key
        assert entry.get("zh", "").strip(), key


def test_every_key_used_in_templates_exists() -> None:
    used = set()
    for path in (WEBUI / "templates").rglob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*['"]([a-z0-9_.]+)['"]\s*\)""", path.read_text()))
        # Keys built from a value: 'state.' ~ a.state, 'perm.' ~ p.code.
        for prefix in re.findall(r"""\bt\(\s*['"]([a-z0-9_.]+\.)['"]\s*~""", path.read_text()):
            assert i18n.keys_with_prefix(prefix), prefix
    missing = sorted(k for k in used if k not in i18n.TABLE)
    assert not missing, missing
    assert len(used) > 50  # the pattern does find the calls


def test_every_key_used_by_a_script_is_sent_to_its_page() -> None:
    sent = {
        "workstation.js": set(workstation.JS_KEYS),
        "monitor.js": set(pages.MONITOR_JS_KEYS),
        "admin.js": set(admin_pages.JS_KEYS),
        "tasks.js": set(task_pages.JS_KEYS),
        "task_form.js": set(task_pages.JS_KEYS),
        "dnc.js": set(task_pages.JS_KEYS),
    }
    for name, keys in sent.items():
        text = (WEBUI / "static" / "js" / name).read_text()
        if "CC.connect(" in text:  # the push socket's status line is translated by live.js
            text += (WEBUI / "static" / "js" / "live.js").read_text()
        literal = set(re.findall(r"""\bt\(\s*"([a-z0-9_.]+)"\s*\)""", text))
        assert literal, name
        assert not sorted(literal - keys), (name, sorted(literal - keys))
        # Keys built in the script: t("state." + s), t("live." + state), t("dir." + ...), t("result." + ...)
        for prefix in re.findall(r"""\bt\(\s*"([a-z0-9_]+\.)"\s*\+""", text):
            assert any(k.startswith(prefix) for k in keys), (name, prefix)


def test_states_results_and_permissions_are_all_translated() -> None:
    from callcenter.campaigns import ACTIONS
    from callcenter.config import GatewayKind
    from callcenter.models import AgentState, CallResult, CampaignState, PacingMode, Permission

    actions = {a for allowed in ACTIONS.values() for a in allowed}
    for key in actions:
        assert "act." + key in i18n.TABLE, key
    for prefix, enum in (
        ("state.", AgentState),
        ("result.", CallResult),
        ("perm.", Permission),
        ("tstate.", CampaignState),
        ("pace.", PacingMode),
        ("gw.", GatewayKind),
    ):
        for member in enum:
            assert prefix + member.value in i18n.TABLE, prefix + member.value


def test_assets_are_served_locally(web: WebHarness) -> None:
    for path in (WEBUI / "templates").rglob("*.html"):
        text = path.read_text()
        assert not re.search(r"""(src|href)=["'](https?:)?//""", text), f"{path.name} loads from another site"
    for asset in ("/static/vendor/uplot/uPlot.iife.min.js", "/static/js/live.js", "/static/app.css"):
        assert web.client.get(asset).status_code == 200, asset
    assert "uPlot (v1.6.32)" in web.client.get("/static/vendor/uplot/uPlot.iife.min.js").text[:200]

"""The one translation table for UI strings. English is the default; `zh` is Simplified Chinese.

Templates call `t("key")`; a key missing from a language falls back to English, and a key missing
everywhere shows the key itself so a gap is visible rather than blank.
"""

from __future__ import annotations

LANGUAGES = ("en", "zh")

TABLE: dict[str, dict[str, str]] = {
    "app.name": {"en": "Call Center", "zh": "呼叫中心"},
    "login.title": {"en": "Sign in", "zh": "登录"},
    "login.username": {"en": "Username", "zh": "用户名"},
    "login.password": {"en": "Password", "zh": "密码"},
    "login.submit": {"en": "Sign in", "zh": "登录"},
    "login.failed": {"en": "Invalid username or password", "zh": "用户名或密码错误"},
    "login.throttled": {"en": "Too many failed attempts; try again later", "zh": "失败次数过多，请稍后再试"},
    "nav.home": {"en": "Home", "zh": "首页"},
    "nav.workstation": {"en": "Workstation", "zh": "坐席工作台"},
    "nav.monitor": {"en": "Monitor", "zh": "监控"},
    "nav.tasks": {"en": "Outbound tasks", "zh": "外呼任务"},
    "nav.admin": {"en": "Administration", "zh": "系统管理"},
    "nav.logout": {"en": "Sign out", "zh": "退出"},
    "home.welcome": {"en": "Welcome", "zh": "欢迎"},
    "home.roles": {"en": "Roles", "zh": "角色"},
    "home.permissions": {"en": "Permissions", "zh": "权限"},
    "home.extension": {"en": "SIP extension", "zh": "分机号"},
    "lang.switch": {"en": "中文", "zh": "English"},
}


def translate(key: str, lang: str = "en") -> str:
    entry = TABLE.get(key)
    if entry is None:
        return key
    return entry.get(lang) or entry.get("en") or key


def pick_language(cookie: str | None, accept: str | None, user_locale: str | None = None) -> str:
    """Cookie choice first, then the user's saved locale, then the browser's Accept-Language."""
    for candidate in (cookie, user_locale):
        if candidate in LANGUAGES:
            return candidate
    if accept and accept.lower().startswith("zh"):
        return "zh"
    return "en"

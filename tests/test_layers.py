"""The layering rule, checked on every import statement of the project's packages.

    app            the composition root: may import everything
    webui          pages, API, push path: may import callcenter, crm, chat
    chat, crm      feature packages: may import callcenter (chat may import crm); never webui or app
    callcenter     the core: imports no feature package, no webui, no app
      engine       pure parts import no SQL, Redis, asyncio, web framework or gateway driver
      gateways     drivers speak the engine's vocabulary, never its coordinator, store or runner
      migrations   explicit operations: import no models of any package (column types are fine)

A forbidden import fails with the file and line that made it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "callcenter", "webui", "crm", "chat")

# module prefix -> prefixes it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "callcenter": ("webui", "crm", "chat", "app"),
    "crm": ("webui", "chat", "app"),
    "chat": ("webui", "app"),
    "webui": ("app",),
    "callcenter.migrations": ("callcenter.models", "crm", "chat", "webui"),
    "callcenter.gateways": (
        "callcenter.engine.dialer",
        "callcenter.engine.runner",
        "callcenter.engine.store",
        "callcenter.engine.sqlstore",
        "callcenter.engine.simulation",
        "callcenter.http",
    ),
}
# The engine's pure modules: plain functions over plain data, the clock passed in.
PURE = ("events", "commands", "calls", "routing", "preview", "pacing", "tasks", "roster", "store", "dialer")
for _name in PURE:
    FORBIDDEN[f"callcenter.engine.{_name}"] = (
        "sqlalchemy",
        "sqlmodel",
        "redis",
        "asyncio",
        "fastapi",
        "starlette",
        "callcenter.gateways",
        "callcenter.engine.sqlstore",
        "callcenter.engine.runner",
        "callcenter.db",
        "callcenter.http",
    )


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            mod = module_name(path)
            rules = [(p, bad) for p, bad in FORBIDDEN.items() if _under(mod, p)]
            for lineno, imported in imports(path):
                for prefix, bad in rules:
                    hit = next((b for b in bad if _under(imported, b)), None)
                    if hit:
                        found.append(
                            f"{path.relative_to(ROOT)}:{lineno}: {mod} imports {imported} ({prefix} must not)"
                        )
    return sorted(set(found))


def test_no_package_imports_across_the_layering_rule() -> None:
    found = violations()
    assert not found, "forbidden imports:\n" + "\n".join(found)


def test_the_rule_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from webui.app import create_app\nimport crm.services\n")
    names = [name for _, name in imports(bad)]
    assert "webui.app" in names and "crm.services" in names
    assert any(_under(n, "webui") for n in names)

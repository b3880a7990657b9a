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
    # agent states (callcenter.models.AgentState)
    "state.offline": {"en": "Offline", "zh": "离线"},
    "state.ready": {"en": "Ready", "zh": "就绪"},
    "state.reserved": {"en": "Connecting", "zh": "接通中"},
    "state.on_call": {"en": "On call", "zh": "通话中"},
    "state.wrap_up": {"en": "Wrap-up", "zh": "话后处理"},
    "state.not_ready": {"en": "Not ready", "zh": "未就绪"},
    "state.away": {"en": "Away", "zh": "离开"},
    # the push connection
    "live.connecting": {"en": "Connecting…", "zh": "连接中…"},
    "live.up": {"en": "Live", "zh": "实时"},
    "live.down": {"en": "Reconnecting…", "zh": "正在重连…"},
    "live.forbidden": {"en": "No live data for this user", "zh": "此用户无实时数据"},
    # call direction and results (callcenter.models.CallResult)
    "dir.outbound": {"en": "Outbound", "zh": "外呼"},
    "dir.manual": {"en": "Manual call", "zh": "手动外呼"},
    "result.answered": {"en": "Answered", "zh": "已接通"},
    "result.machine": {"en": "Machine", "zh": "语音信箱"},
    "result.abandoned": {"en": "Abandoned", "zh": "放弃"},
    "result.busy": {"en": "Busy", "zh": "忙线"},
    "result.no_answer": {"en": "No answer", "zh": "无人接听"},
    "result.failed": {"en": "Failed", "zh": "失败"},
    "result.cancelled": {"en": "Cancelled", "zh": "已取消"},
    "result.dnc": {"en": "Do not call", "zh": "禁止呼叫"},
    "result.lost": {"en": "Lost", "zh": "丢失"},
    "result.not_dialled": {"en": "Not dialled", "zh": "未拨出"},
    # agent workstation
    "ws.no_extension": {
        "en": "This user has no SIP extension; ask an administrator to assign one.",
        "zh": "此用户没有分机号，请联系管理员分配。",
    },
    "ws.time_in_state": {"en": "Time in this state", "zh": "当前状态时长"},
    "ws.set_state": {"en": "Set my state", "zh": "设置状态"},
    "ws.extension": {"en": "Extension", "zh": "分机"},
    "ws.today": {"en": "Today", "zh": "今日"},
    "ws.c.calls": {"en": "Calls today", "zh": "今日通话"},
    "ws.c.talk": {"en": "Talk time", "zh": "通话时长"},
    "ws.c.avg": {"en": "Average talk", "zh": "平均通话"},
    "ws.c.saved": {"en": "Outcomes saved", "zh": "已记录结果"},
    "ws.c.manual": {"en": "Manual calls", "zh": "手动外呼"},
    "ws.waiting": {
        "en": "Waiting for the next call. The customer pops up here the moment a call connects.",
        "zh": "等待来电。通话接通时，客户信息会立即在此弹出。",
    },
    "ws.pop_title": {"en": "Call connected:", "zh": "通话已接通："},
    "ws.customer": {"en": "Customer", "zh": "客户"},
    "ws.known_customer": {"en": "existing record", "zh": "已有客户"},
    "ws.new_customer": {"en": "new record", "zh": "新客户"},
    "ws.lead_fields": {"en": "From the list", "zh": "名单信息"},
    "ws.no_lead_fields": {"en": "No list data for this call.", "zh": "此通话没有名单信息。"},
    "ws.outcome": {"en": "Outcome", "zh": "意向 / 结果"},
    "ws.note": {"en": "Note", "zh": "备注"},
    "ws.add_tag": {"en": "Add a tag and press Enter", "zh": "输入标签后按回车"},
    "ws.remove_tag": {"en": "Remove tag", "zh": "删除标签"},
    "ws.save": {"en": "Save to CRM", "zh": "保存到客户资料"},
    "ws.saving": {"en": "Saving…", "zh": "保存中…"},
    "ws.saved": {"en": "Saved", "zh": "已保存"},
    "ws.save_failed": {"en": "Not saved", "zh": "保存失败"},
    "ws.done": {"en": "Done", "zh": "完成"},
    "ws.on_call": {"en": "On call", "zh": "通话中"},
    "ws.wrap_up": {"en": "Wrap-up", "zh": "话后处理"},
    "ws.earlier_calls": {"en": "Earlier calls", "zh": "历史通话"},
    "ws.no_calls": {"en": "No earlier calls with this number.", "zh": "此号码没有历史通话。"},
    "ws.notes": {"en": "Notes", "zh": "备注记录"},
    "ws.no_notes": {"en": "No notes yet.", "zh": "暂无备注。"},
    "ws.h.when": {"en": "When", "zh": "时间"},
    "ws.h.task": {"en": "Task", "zh": "任务"},
    "ws.h.result": {"en": "Result", "zh": "结果"},
    "ws.h.outcome": {"en": "Outcome", "zh": "意向"},
    "ws.h.talk": {"en": "Talk", "zh": "通话"},
    "ws.h.ext": {"en": "Ext.", "zh": "分机"},
    # CRM fields
    "crm.name": {"en": "Name", "zh": "姓名"},
    "crm.company": {"en": "Company", "zh": "公司"},
    "crm.email": {"en": "E-mail", "zh": "邮箱"},
    "crm.phones": {"en": "Phones", "zh": "电话"},
    "crm.tags": {"en": "Tags", "zh": "标签"},
    # supervisor monitor
    "mon.tasks": {"en": "Tasks", "zh": "外呼任务"},
    "mon.agents": {"en": "Agents", "zh": "坐席"},
    "mon.ext": {"en": "Ext.", "zh": "分机"},
    "mon.agent": {"en": "Agent", "zh": "坐席"},
    "mon.state": {"en": "State", "zh": "状态"},
    "mon.in_state": {"en": "Time in state", "zh": "状态时长"},
    "mon.call": {"en": "Current call", "zh": "当前通话"},
    "mon.talk": {"en": "Talk", "zh": "通话时长"},
    "mon.task": {"en": "Task", "zh": "任务"},
    "mon.no_agents": {"en": "No agents yet.", "zh": "暂无坐席。"},
    # administration
    "adm.users": {"en": "Users", "zh": "用户"},
    "adm.roles": {"en": "Roles", "zh": "角色"},
    "adm.skill_groups": {"en": "Skill groups", "zh": "技能组"},
    "adm.agents": {"en": "Agents and extensions", "zh": "坐席与分机"},
    "adm.new_user": {"en": "New user", "zh": "新建用户"},
    "adm.edit_user": {"en": "Edit user", "zh": "编辑用户"},
    "adm.username": {"en": "Username", "zh": "用户名"},
    "adm.display_name": {"en": "Display name", "zh": "显示名称"},
    "adm.password": {"en": "Password (8+ characters)", "zh": "密码（至少 8 位）"},
    "adm.new_password": {"en": "New password (leave empty to keep)", "zh": "新密码（留空则不修改）"},
    "adm.extension": {"en": "Extension", "zh": "分机号"},
    "adm.language": {"en": "Language", "zh": "语言"},
    "adm.active": {"en": "Active", "zh": "启用"},
    "adm.yes": {"en": "Yes", "zh": "是"},
    "adm.no": {"en": "No", "zh": "否"},
    "adm.edit": {"en": "Edit", "zh": "编辑"},
    "adm.create": {"en": "Create", "zh": "创建"},
    "adm.save": {"en": "Save", "zh": "保存"},
    "adm.cancel": {"en": "Cancel", "zh": "取消"},
    "adm.role": {"en": "Role", "zh": "角色"},
    "adm.description": {"en": "Description", "zh": "描述"},
    "adm.builtin": {"en": "Built-in", "zh": "内置"},
    "adm.permissions": {"en": "Permissions", "zh": "权限"},
    "adm.code": {"en": "Code", "zh": "代码"},
    "adm.new_group": {"en": "New skill group", "zh": "新建技能组"},
    "adm.edit_group": {"en": "Edit skill group", "zh": "编辑技能组"},
    "adm.name": {"en": "Name", "zh": "名称"},
    "adm.members": {"en": "Agents", "zh": "坐席成员"},
    "adm.no_groups": {"en": "No skill groups yet.", "zh": "暂无技能组。"},
    "adm.new_agent": {"en": "New agent", "zh": "新建坐席"},
    "adm.edit_agent": {"en": "Edit agent", "zh": "编辑坐席"},
    "adm.no_agents": {"en": "No agents yet.", "zh": "暂无坐席。"},
    "adm.user": {"en": "User", "zh": "用户"},
    "adm.state": {"en": "State", "zh": "状态"},
    "adm.simulated": {"en": "simulated", "zh": "模拟"},
    "adm.js.failed": {"en": "Not saved", "zh": "保存失败"},
    # permissions (callcenter.models.Permission)
    "perm.workstation": {"en": "Agent workstation", "zh": "坐席工作台"},
    "perm.multimedia_agent": {"en": "Multimedia agent: takes web chats", "zh": "多媒体坐席：接待网页聊天"},
    "perm.callcenter_agent": {
        "en": "Call center agent: SIP extension, takes calls",
        "zh": "呼叫中心坐席：分机接听",
    },
    "perm.crm": {"en": "Customer records", "zh": "客户资料"},
    "perm.task_manage": {"en": "Create and edit outbound tasks", "zh": "创建和编辑外呼任务"},
    "perm.task_control": {"en": "Start, pause and stop outbound tasks", "zh": "启动、暂停和停止外呼任务"},
    "perm.monitor": {"en": "Live monitor and call listening", "zh": "实时监控与监听"},
    "perm.admin": {
        "en": "Administration: users, roles, skill groups, extensions, gateways",
        "zh": "系统管理：用户、角色、技能组、分机、网关",
    },
}


def keys_with_prefix(*prefixes: str) -> list[str]:
    """The table's keys starting with any of `prefixes` (what a page's script needs, sent as JSON)."""
    return sorted(k for k in TABLE if k.startswith(prefixes))


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

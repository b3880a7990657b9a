"""Number lists: reading CSV / XLSX uploads, normalising numbers to E.164, and the import job.

A header row names the columns; one of them holds the phone number (found by name, or given), and
every other column is kept with the lead (`Lead.fields`, shown in the screen pop). Rows that cannot
be imported (empty, invalid, duplicate, on the do-not-call list) are reported one by one in
`ImportIssue`, never dropped silently. CSVs saved by Excel (UTF-8 with BOM, GBK/GB18030, UTF-16) are
read as such.

The import runs as an rq job while the task shows `initializing`, writing its progress (rows done,
rows per second) to the task row; it ends the task's `initializing` state either way. It survives
its worker: it resumes after the last row it committed when restarted (`import_list`), a job that
lost its task writes nothing more, and an admin may cancel it (`cancel_import`).

Memory stays flat whatever the file's size: a CSV is read line by line (its encoding found by a
streaming pass), an XLSX through openpyxl's read-only mode after its zip is checked (the members'
declared and actual unzipped sizes, so a zip bomb is refused before it is parsed), rows are written in
batches bounded by count and by bytes. A physical line longer than `MAX_LINE_CHARS` refuses the file;
a cell longer than `MAX_CELL_CHARS` refuses its row (reason `too_long`): the lead's columns travel in
every screen pop, and one 40 MB column once made Redis drop the web's subscription.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import phonenumbers
from phonenumbers.tzdata import TIMEZONE_DATA
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel import Session

from callcenter import campaigns as campaign_table
from callcenter.errors import Invalid, NotFound
from callcenter.models import Campaign, DncEntry, ImportIssue, Lead, LeadStatus

log = logging.getLogger(__name__)

PHONE_HEADERS = (
    "phone",
    "phone_number",
    "phonenumber",
    "phone number",
    "mobile",
    "mobile_phone",
    "cell",
    "number",
    "tel",
    "telephone",
    "msisdn",
    "电话",
    "手机",
    "手机号",
    "手机号码",
    "电话号码",
    "号码",
    "联系电话",
    "联系方式",
)
MB = 1024 * 1024
MAX_CELL_CHARS = 2000  # one lead column
MAX_LINE_CHARS = 64 * 1024  # one line of a CSV
MAX_COLUMNS = 200
MAX_HEADER_CHARS = 128  # a column name (a key in every lead's fields)
DEFAULT_MAX_UNPACKED = 300 * MB  # an XLSX, unzipped (CALLCENTER_UPLOAD_MAX_UNPACKED_MB)
# openpyxl loads the shared strings table whole, even in read-only mode: it is capped on its own.
MAX_SHARED_STRINGS = 64 * MB
BATCH = 50_000
BATCH_BYTES = 8 * MB  # of lead fields held before a write
_READ_CHUNK = MB
_SEPARATORS = re.compile(r"[\s\-().\u00a0\u3000]")


class ListError(Invalid):
    """The file as a whole cannot be imported (unreadable, empty, no phone column)."""

    def __init__(self, message: str, field: str = "file") -> None:
        super().__init__(message, field=field)


# --- reading -----------------------------------------------------------------------------------


_NOT_UTF16 = "the file starts like UTF-16 text but is not; save it as CSV (UTF-8) or XLSX"


def _csv_encoding(f: io.BufferedIOBase | io.BytesIO) -> tuple[str, int]:
    """The encoding of a CSV and its number of line feeds, in one streaming pass (a chunk at a time,
    whatever the file's size): UTF-16 by its BOM, else UTF-8 if every byte decodes as UTF-8, else
    GB18030 (GBK's superset) if every byte decodes as that."""
    head = f.read(4)
    f.seek(0)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return "utf-16", _count_lines(f, "utf-16")
        except UnicodeDecodeError:
            raise ListError(_NOT_UTF16) from None
    try:
        return "utf-8-sig", _count_lines(f, "utf-8-sig")
    except UnicodeDecodeError:
        f.seek(0)
    try:
        return "gb18030", _count_lines(f, "gb18030")
    except UnicodeDecodeError:
        raise ListError("the file is neither UTF-8 nor GBK text; save it as CSV (UTF-8) or XLSX") from None


def _count_lines(f: io.BufferedIOBase | io.BytesIO, encoding: str) -> int:
    decoder = codecs.getincrementaldecoder(encoding)()
    lines = 0
    last = ""
    while chunk := f.read(_READ_CHUNK):
        text = decoder.decode(chunk)
        lines += text.count("\n")
        last = text[-1:] or last
    decoder.decode(b"", final=True)
    return lines + (0 if last in ("\n", "") else 1)  # a last line without a line feed counts


@dataclass
class Table:
    header: list[str]
    rows: Iterator[list[str]]  # data rows, as text
    total: int  # estimated number of data rows (exact for CSV)
    first_row_no: int = 2  # spreadsheet row number of the first data row (the header is row 1)
    close: Callable[[], None] = lambda: None  # releases the file when the rows are not read to the end


def _sniff_dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def read_table(
    path: Path,
    *,
    filename: str = "",
    max_bytes: int | None = None,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED,
) -> Table:
    """Open a CSV or XLSX list without reading it into memory. Raises ListError when it cannot be
    read, has no header, is larger than `max_bytes` or (an XLSX) unzips to more than
    `max_unpacked_bytes`."""
    name = (filename or path.name).lower()
    size = path.stat().st_size
    if size == 0:
        raise ListError("the file is empty")
    if max_bytes is not None and size > max_bytes:
        raise ListError(f"the file is larger than {max_bytes / MB:.0f} MB")
    if name.endswith((".xlsx", ".xlsm")):
        return _read_xlsx(path, max_unpacked_bytes)
    if name.endswith(".xls"):
        raise ListError("old .xls workbooks are not supported; save the list as .xlsx or .csv")
    with path.open("rb") as f:
        if f.read(4) == b"PK\x03\x04":  # an XLSX without its extension
            return _read_xlsx(path, max_unpacked_bytes)
        f.seek(0)
        encoding, lines = _csv_encoding(f)
    text = path.open("r", encoding=encoding, newline="")
    try:
        sample = text.read(8192)
        if "\x00" in sample[:4096]:
            raise ListError("the file is not a text CSV (binary content)")
        text.seek(0)
        reader = csv.reader(_capped_lines(text), _sniff_dialect(sample))
        try:
            header = next(reader)
        except StopIteration:
            raise ListError("the file is empty") from None
        except csv.Error as exc:
            raise ListError(f"the CSV cannot be read: {exc}") from None
        header = _header(header)
    except BaseException:
        text.close()
        raise
    return Table(header, _safe_rows(reader, text), max(0, lines - 1), close=text.close)


def _capped_lines(text: io.TextIOBase) -> Iterator[str]:
    """The file's lines, refusing one longer than MAX_LINE_CHARS before it is all in memory."""
    line_no = 0
    while line := text.readline(MAX_LINE_CHARS + 1):
        line_no += 1
        if len(line) > MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            raise ListError(
                f"line {line_no} is longer than {MAX_LINE_CHARS // 1024} KB: a list holds one customer "
                "per line"
            )
        yield line


def _safe_rows(reader: Iterator[list[str]], text: io.TextIOBase) -> Iterator[list[str]]:
    try:
        yield from reader
    except csv.Error as exc:
        raise ListError(f"the CSV cannot be read past this point: {exc}") from None
    except UnicodeDecodeError:
        raise ListError(_NOT_UTF16) from None
    finally:
        text.close()


def _header(cells: Sequence[str]) -> list[str]:
    header = [h.strip() for h in cells]
    while header and not header[-1]:
        header.pop()  # a spreadsheet's empty columns past the last named one
    if not any(header):
        raise ListError("the first row must name the columns (a header row)")
    if len(header) > MAX_COLUMNS:
        raise ListError(f"the list has {len(header)} columns; at most {MAX_COLUMNS}")
    if any(len(h) > MAX_HEADER_CHARS for h in header):
        raise ListError(f"a column name is longer than {MAX_HEADER_CHARS} characters")
    return header


def check_xlsx(path: Path, max_unpacked_bytes: int) -> None:
    """Refuse a workbook that unzips to more than `max_unpacked_bytes` (or whose shared strings,
    which openpyxl loads whole, pass MAX_SHARED_STRINGS) before anything parses it: first by the
    sizes its zip declares, then by what its members actually unzip to (zipfile stops a member at its
    declared size and checks its CRC, so a member that lies about its size is refused too)."""
    limit_mb = max_unpacked_bytes / MB
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            declared = sum(m.file_size for m in members)
            if declared > max_unpacked_bytes:
                raise ListError(
                    f"the workbook unzips to {declared / MB:.0f} MB, more than the {limit_mb:.0f} MB allowed"
                )
            for m in members:
                if m.filename.lower().endswith("sharedstrings.xml") and m.file_size > MAX_SHARED_STRINGS:
                    raise ListError(
                        f"the workbook's text table unzips to {m.file_size / MB:.0f} MB, more than the "
                        f"{MAX_SHARED_STRINGS / MB:.0f} MB allowed"
                    )
            actual = 0
            for m in members:
                with zf.open(m) as member:
                    while chunk := member.read(_READ_CHUNK):
                        actual += len(chunk)
                        if actual > max_unpacked_bytes:
                            raise ListError(f"the workbook unzips to more than the {limit_mb:.0f} MB allowed")
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
        raise ListError(f"the workbook is damaged: {exc}") from None


def _read_xlsx(path: Path, max_unpacked_bytes: int) -> Table:
    from openpyxl import load_workbook

    check_xlsx(path, max_unpacked_bytes)
    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a broken file
        raise ListError(f"the workbook cannot be read: {type(exc).__name__}") from None
    try:
        sheet = book.worksheets[0]
        values = sheet.iter_rows(values_only=True)
        try:
            first = next(values)
        except StopIteration:
            raise ListError("the workbook's first sheet is empty") from None
        header = _header([_cell(v) for v in first])
        total = max(0, (sheet.max_row or 1) - 1)
    except BaseException:
        book.close()
        raise
    width = len(header)

    def rows() -> Iterator[list[str]]:
        try:
            for row in values:
                # Cells past the last named column are not kept: the sheet may claim thousands.
                yield [_cell(v) for v in row[:width]]
        finally:
            book.close()

    return Table(header, rows(), total, close=book.close)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Excel stores long numbers as floats
    return str(value)


def find_phone_column(header: Sequence[str], requested: str | None = None) -> int:
    """Index of the phone column: `requested` (a header name or a 1-based number), else by name."""
    if requested:
        requested = requested.strip()
        for i, name in enumerate(header):
            if name.lower() == requested.lower():
                return i
        if requested.isdigit() and 1 <= int(requested) <= len(header):
            return int(requested) - 1
        raise ListError(
            f"no column named {requested!r}; the columns are: {', '.join(header)}", field="phone_column"
        )
    lowered = [h.lower() for h in header]
    for candidate in PHONE_HEADERS:
        if candidate in lowered:
            return lowered.index(candidate)
    raise ListError(
        "no phone column: name it one of phone, mobile, number, 电话, 手机, 号码 "
        f"(or choose it with phone_column); the columns are: {', '.join(header)}",
        field="phone_column",
    )


# --- numbers -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Normalised:
    e164: str
    tz: str  # '|'-joined IANA zones of the number's area, '' when unknown


class Normaliser:
    """Numbers to E.164 and time zone. A fast path builds the number directly when phonenumbers'
    parse could not read it any other way (plain national digits with no trunk or carrier prefix, or
    '+' and digits); everything else goes through `phonenumbers.parse`. Validity is always
    phonenumbers' `is_valid_number`."""

    def __init__(self, region: str) -> None:
        self.region = region.upper()
        self.cc = phonenumbers.country_code_for_region(self.region)
        meta = phonenumbers.PhoneMetadata.metadata_for_region(self.region)
        prefix = meta.national_prefix_for_parsing if meta else None
        self._strip = re.compile(prefix) if prefix else None
        self._cc_digits = str(self.cc)
        self._memo: dict[str, Normalised | str] = {}

    def __call__(self, raw: str) -> Normalised | str:
        """The normalised number, or a reason string ('empty' / 'invalid: ...')."""
        memo = self._memo.get(raw)
        if memo is not None:
            return memo
        result = self._normalise(raw)
        if len(self._memo) < 200_000:
            self._memo[raw] = result
        return result

    def _normalise(self, raw: str) -> Normalised | str:
        text = _SEPARATORS.sub("", raw)
        if not text:
            return "empty"
        number: phonenumbers.PhoneNumber | None = None
        if text.startswith("+") and text[1:].isdigit():
            number = self._international(text[1:])
        elif (
            text.isdigit()
            and not text.startswith(self._cc_digits)
            and 4 <= len(text) <= 15
            and not (self._strip and self._strip.match(text))
            and text[0] != "0"
        ):
            number = phonenumbers.PhoneNumber(country_code=self.cc, national_number=int(text))
        if number is None:
            try:
                number = phonenumbers.parse(text, self.region)
            except phonenumbers.NumberParseException as exc:
                return f"invalid: {exc._msg}"
        if not phonenumbers.is_valid_number(number):
            return "invalid: not a valid number for its region"
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return Normalised(e164, time_zone_key(e164[1:]))

    @staticmethod
    def _international(digits: str) -> phonenumbers.PhoneNumber | None:
        for size in (1, 2, 3):
            cc = int(digits[:size])
            if phonenumbers.region_code_for_country_code(cc) != "ZZ":
                rest = digits[size:]
                if not rest or rest[0] == "0":
                    return None  # leading zeros (Italy ...) need the full parser
                return phonenumbers.PhoneNumber(country_code=cc, national_number=int(rest))
        return None


def time_zone_key(digits: str) -> str:
    """The number's time zones from phonenumbers' prefix table (longest prefix first)."""
    for size in range(min(9, len(digits)), 0, -1):
        zones = TIMEZONE_DATA.get(digits[:size])
        if zones:
            names = [z for z in zones if z != "Etc/Unknown"]
            return "|".join(sorted(names))
    return ""


_WORKER_NORMALISER: Normaliser | None = None


def normalise_chunk(region: str, raws: list[str]) -> list[tuple[str, str] | str]:
    """Normalise a chunk in a worker process (the import spreads chunks over the CPU cores). Plain
    tuples, not `Normalised`: they cross the process boundary several times cheaper."""
    global _WORKER_NORMALISER
    if _WORKER_NORMALISER is None or _WORKER_NORMALISER.region != region:
        _WORKER_NORMALISER = Normaliser(region)
    out: list[tuple[str, str] | str] = []
    for raw in raws:
        r = _WORKER_NORMALISER(raw)
        out.append(r if isinstance(r, str) else (r.e164, r.tz))
    return out


def _die_with_importer(importer: int) -> None:
    """A normalising process ends with the import that forked it, even killed: a pool process left
    behind waits on its queue for ever."""
    from callcenter.jobs import die_with_parent

    die_with_parent(signal.SIGKILL, parent=importer)


def normalise_one(raw: str, region: str) -> str:
    """E.164 of one number, or `Invalid` naming the field."""
    result = Normaliser(region)(raw)
    if isinstance(result, str):
        raise Invalid(f"{raw!r} is not a valid phone number ({result})", field="number")
    return result.e164


# --- the import ---------------------------------------------------------------------------------

LEAD = Lead.__table__  # type: ignore[attr-defined]
ISSUE = ImportIssue.__table__  # type: ignore[attr-defined]
CAMPAIGN = Campaign.__table__  # type: ignore[attr-defined]
DNC = DncEntry.__table__  # type: ignore[attr-defined]


@dataclass
class ImportResult:
    total: int
    imported: int
    rejected: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return (self.imported + self.rejected) / self.seconds if self.seconds > 0 else 0.0


def _bulk_insert(conn: Any, table: Any, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Insert many rows at driver speed: COPY on PostgreSQL, executemany on SQLite."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})", rows)


CHUNK = 20_000
CHUNK_CHARS = 4 * MB  # a chunk of long rows ends sooner
PARALLEL_FROM_ROWS = 60_000


def _normalised(
    chunks: Iterator[list[tuple[int, list[str], str]]], normalise: Normaliser, region: str, total: int
) -> Iterator[tuple[list[tuple[int, list[str], str]], list[tuple[str, str] | str]]]:
    """Chunks with their normalised numbers, in order. Big lists are normalised in worker processes
    (phonenumbers' validation is the costly part) while this process reads and writes."""
    workers = min(4, os.cpu_count() or 1)
    # Fork only from a single-threaded main thread (the rq work-horse); forking a threaded process
    # (a web server) could copy a lock held by another thread.
    forkable = "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
    if total < PARALLEL_FROM_ROWS or workers < 2 or not forkable:
        for chunk in chunks:
            results = [normalise(raw) for _, _, raw in chunk]
            yield chunk, [r if isinstance(r, str) else (r.e164, r.tz) for r in results]
        return
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_die_with_importer, initargs=(os.getpid(),)
    ) as pool:
        in_flight: deque[tuple[list[tuple[int, list[str], str]], Future[list[tuple[str, str] | str]]]] = (
            deque()
        )
        for chunk in chunks:
            in_flight.append((chunk, pool.submit(normalise_chunk, region, [raw for _, _, raw in chunk])))
            if len(in_flight) > workers * 2:
                done_chunk, future = in_flight.popleft()
                yield done_chunk, future.result()
        while in_flight:
            done_chunk, future = in_flight.popleft()
            yield done_chunk, future.result()


class ImportSuperseded(Exception):
    """This import job no longer owns its task's import: it was cancelled, or restarted as another job."""


def _checkpoint(conn: Any, campaign_id: int) -> tuple[int, int, int, int]:
    """Where an interrupted import ends: (last row number written, rows done, imported, rejected).
    Each commit writes its leads, its rejected rows and these counters together, so they agree."""
    last = max(
        conn.execute(select(func.max(LEAD.c.row_no)).where(LEAD.c.campaign_id == campaign_id)).scalar() or 0,
        conn.execute(select(func.max(ISSUE.c.row_no)).where(ISSUE.c.campaign_id == campaign_id)).scalar()
        or 0,
    )
    if not last:
        return 0, 0, 0, 0
    row = conn.execute(
        select(CAMPAIGN.c.import_done, CAMPAIGN.c.import_ok, CAMPAIGN.c.import_rejected).where(
            CAMPAIGN.c.id == campaign_id
        )
    ).one()
    return last, int(row[0]), int(row[1]), int(row[2])


def _owned(campaign_id: int, job_id: str | None) -> Any:
    """The WHERE clause of a write by an import: for an rq job, the task is still initializing and
    still names this job (a restart names a new one; a cancel ends initializing)."""
    if job_id is None:
        return CAMPAIGN.c.id == campaign_id
    return (
        (CAMPAIGN.c.id == campaign_id)
        & (CAMPAIGN.c.state == campaign_table.C.INITIALIZING.value)
        & (CAMPAIGN.c.import_job_id == job_id)
    )


def import_list(
    engine: Engine,
    *,
    campaign_id: int,
    path: Path,
    phone_column: str | None,
    region: str,
    filename: str = "",
    clock: Any = time.time,
    job_id: str | None = None,
    batch: int = BATCH,
    heartbeat: Callable[[], None] | None = None,
    max_bytes: int | None = None,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED,
) -> ImportResult:
    """Import a list into a task in `initializing` (the caller then ends that state).

    Resumable: rows are numbered as in the file, and an import picks up after the last row a
    previous, interrupted one committed (its leads, rejected rows and counters are committed together
    every `batch` rows), so running it again never duplicates a lead. With `job_id`, every commit
    checks that the task still belongs to that job and raises ImportSuperseded when it does not.
    `heartbeat` is called as rows go by (the job renews its lease with it)."""
    beat = heartbeat or (lambda: None)
    started = time.perf_counter()
    table = read_table(path, filename=filename, max_bytes=max_bytes, max_unpacked_bytes=max_unpacked_bytes)
    phone_idx = find_phone_column(table.header, phone_column)
    names = [h or f"column {i + 1}" for i, h in enumerate(table.header)]
    others = [(i, n) for i, n in enumerate(names) if i != phone_idx]
    normalise = Normaliser(region)
    with engine.begin() as conn:
        owned = conn.execute(
            update(CAMPAIGN).where(_owned(campaign_id, job_id)).values(import_total=table.total)
        )
        if owned.rowcount != 1:
            raise ImportSuperseded(f"task {campaign_id} is no longer imported by job {job_id}")
        resume_after, done, imported, rejected = _checkpoint(conn, campaign_id)
        dnc = set(conn.execute(select(DNC.c.number)).scalars())
        # Numbers as ints (E.164 without the '+'): half the memory of the strings on a big list.
        seen = {
            int(n[1:])
            for n in conn.execute(select(LEAD.c.number).where(LEAD.c.campaign_id == campaign_id)).scalars()
        }
        if resume_after:
            # A number rejected for the do-not-call list counts as seen too: a later row with it is
            # a duplicate, as it would have been without the interruption.
            for raw in conn.execute(
                select(ISSUE.c.raw_number).where(ISSUE.c.campaign_id == campaign_id, ISSUE.c.reason == "dnc")
            ).scalars():
                known = normalise(raw)
                if not isinstance(known, str):
                    seen.add(int(known.e164[1:]))
    beat()
    if resume_after:
        log.info(
            "task %s: import resumes after row %d (%d rows done before)", campaign_id, resume_after, done
        )
    lead_cols = (
        "campaign_id",
        "row_no",
        "number",
        "tz",
        "fields",
        "status",
        "attempts",
        "next_at",
        "claimed_by",
        "last_result",
        "last_call_id",
    )
    issue_cols = ("campaign_id", "row_no", "raw_number", "reason", "detail")
    pending = LeadStatus.PENDING.value
    leads: list[tuple[Any, ...]] = []
    issues: list[tuple[Any, ...]] = []
    done_before = done
    pending_bytes = 0  # of lead fields not written yet
    dumps = json.dumps
    width = len(table.header)

    def flush() -> None:
        nonlocal leads, issues, pending_bytes
        elapsed = time.perf_counter() - started
        with engine.begin() as conn:
            # The task row first: on PostgreSQL its lock orders this commit against a cancel or a
            # restart, and a task no longer ours rolls the whole batch back.
            owned = conn.execute(
                update(CAMPAIGN)
                .where(_owned(campaign_id, job_id))
                .values(
                    import_done=done,
                    import_ok=imported,
                    import_rejected=rejected,
                    import_rows_per_s=round((done - done_before) / elapsed, 1) if elapsed > 0 else 0.0,
                    import_total=max(table.total, done),
                )
            )
            if owned.rowcount != 1:
                raise ImportSuperseded(f"task {campaign_id} is no longer imported by job {job_id}")
            _bulk_insert(conn, LEAD, lead_cols, leads)
            _bulk_insert(conn, ISSUE, issue_cols, issues)
        leads, issues, pending_bytes = [], [], 0
        beat()

    def chunks() -> Iterator[list[tuple[int, list[str], str]]]:
        chunk: list[tuple[int, list[str], str]] = []
        chars = 0
        row_no = table.first_row_no - 1
        for row in table.rows:
            row_no += 1
            if row_no <= resume_after:
                continue  # committed by an earlier run of this import
            if not any(cell.strip() for cell in row):
                continue  # a blank line between rows is not data
            chunk.append((row_no, row, row[phone_idx].strip() if phone_idx < len(row) else ""))
            chars += sum(map(len, row))
            if len(chunk) >= CHUNK or chars >= CHUNK_CHARS:
                yield chunk
                chunk, chars = [], 0
            elif len(chunk) % 1000 == 0:
                beat()
        if chunk:
            yield chunk

    for chunk, results in _normalised(chunks(), normalise, region, table.total - resume_after):
        beat()
        for (row_no, row, raw), result in zip(chunk, results, strict=True):
            done += 1
            if max(map(len, row[:width]), default=0) > MAX_CELL_CHARS:
                name, size = next(
                    (names[i], len(c)) for i, c in enumerate(row[:width]) if len(c) > MAX_CELL_CHARS
                )
                issues.append(
                    (
                        campaign_id,
                        row_no,
                        raw[:64],
                        "too_long",
                        f"column {name[:64]!r} has {size} characters; at most {MAX_CELL_CHARS}",
                    )
                )
                rejected += 1
                continue
            if isinstance(result, str):
                reason, detail = (
                    ("empty", "no number in the phone column") if result == "empty" else ("invalid", result)
                )
                issues.append((campaign_id, row_no, raw[:64], reason, detail))
                rejected += 1
                continue
            e164, tz = result
            key = int(e164[1:])
            if key in seen:
                issues.append(
                    (campaign_id, row_no, raw[:64], "duplicate", f"{e164} appears on an earlier row")
                )
                rejected += 1
            elif e164 in dnc:
                issues.append((campaign_id, row_no, raw[:64], "dnc", f"{e164} is on the do-not-call list"))
                seen.add(key)
                rejected += 1
            else:
                seen.add(key)
                fields = dumps(
                    {name: (row[i].strip() if i < len(row) else "") for i, name in others}, ensure_ascii=False
                )
                pending_bytes += len(fields)
                leads.append(
                    (
                        campaign_id,
                        row_no,
                        e164,
                        tz,
                        fields,
                        pending,
                        0,
                        0.0,
                        "",
                        "",
                        "",
                    )
                )
                imported += 1
            if len(leads) + len(issues) >= batch or pending_bytes >= BATCH_BYTES:
                flush()
    flush()
    return ImportResult(done, imported, rejected, time.perf_counter() - started)


# Errors that say the database or Redis went away, not that the list is bad: the task stays
# initializing and the import resumes when it is restarted (jobs.restart_stale_imports).
_TRANSIENT: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)


def import_job(
    campaign_id: int,
    path: str,
    phone_column: str | None,
    filename: str = "",
    *,
    batch: int = BATCH,
    lease_s: float | None = None,
) -> dict[str, Any]:
    """rq entry point: import, then end `initializing` (done, or failed with the reason kept).

    Run by rq, the job holds a lease in Redis while it works (renewed as rows go by, `lease_s`
    long); the workers' watchdog restarts an import whose lease and worker are both gone, and the
    restarted job resumes after the last committed row. A job that lost its task (cancelled,
    restarted as another job) stops at its next commit without touching the task."""
    from redis import Redis
    from rq import get_current_job

    from callcenter.config import load_settings
    from callcenter.db import make_engine
    from callcenter.jobs import LEASE_S, ImportLease

    settings = load_settings()
    engine = make_engine(settings.effective_database_url)
    job = get_current_job()
    job_id = job.id if job is not None else None
    client = Redis.from_url(settings.redis_url) if settings.redis_url and job_id else None
    lease = ImportLease(client, campaign_id, job_id, lease_s or LEASE_S) if client and job_id else None
    if lease:
        lease.renew(force=True)
    try:
        try:
            result = import_list(
                engine,
                campaign_id=campaign_id,
                path=Path(path),
                phone_column=phone_column,
                region=settings.default_region,
                filename=filename,
                job_id=job_id,
                batch=batch,
                heartbeat=lease.renew if lease else None,
                max_bytes=settings.upload_max_bytes,
                max_unpacked_bytes=settings.upload_max_unpacked_bytes,
            )
        except ImportSuperseded as exc:
            log.warning("import job %s stops: %s", job_id, exc)
            return {"superseded": str(exc)}
        except _TRANSIENT:
            log.exception("import of task %s interrupted; it resumes when restarted", campaign_id)
            raise  # the lease is left to expire: the watchdog restarts the import after it
        except Exception as exc:
            log.exception("import of task %s failed", campaign_id)
            message = (
                exc.message if isinstance(exc, Invalid) else f"import failed: {type(exc).__name__}: {exc}"
            )
            finish_import(engine, campaign_id, error=message, job_id=job_id, redis_url=settings.redis_url)
            if lease:
                lease.release()
            raise
        finish_import(engine, campaign_id, error="", job_id=job_id, redis_url=settings.redis_url)
        if lease:
            lease.release()
        return {
            "total": result.total,
            "imported": result.imported,
            "rejected": result.rejected,
            "rows_per_s": round(result.rows_per_s, 1),
        }
    finally:
        engine.dispose()
        if client is not None:
            client.close()


def finish_import(
    engine: Engine, campaign_id: int, *, error: str, job_id: str | None = None, redis_url: str = ""
) -> list[campaign_table.Move]:
    """End `initializing` (done, or failed with the reason kept) and tell the web, so task lists
    change state without polling. With `job_id`: only if the task is still that job's (else [])."""
    event = campaign_table.CampaignEvent.IMPORT_FAILED if error else campaign_table.CampaignEvent.IMPORT_DONE
    with engine.begin() as conn:
        owned = conn.execute(update(CAMPAIGN).where(_owned(campaign_id, job_id)).values(import_error=error))
        if job_id is not None and owned.rowcount != 1:
            log.warning("task %s is no longer imported by job %s: left as it is", campaign_id, job_id)
            return []
        moves = campaign_table.transition(
            conn,
            campaign_id=campaign_id,
            event=event,
            actor="import",
            now=time.time(),
            note=error or "list imported",
        )
    if redis_url:
        _publish(redis_url, moves)
    return moves


def cancel_import(
    conn: Connection | Session, *, campaign_id: int, actor: str, now: float
) -> list[campaign_table.Move]:
    """An admin ends an import (stuck, or not wanted): the task goes to `stopped` with an import error
    saying so and keeps the rows imported so far. The caller commits, then stops the job
    (`jobs.stop_import`); the job, if it still runs, finds the task no longer its own at its next
    commit and writes nothing more."""
    row = conn.execute(
        select(CAMPAIGN.c.import_done, CAMPAIGN.c.import_total, CAMPAIGN.c.import_ok).where(
            CAMPAIGN.c.id == campaign_id
        )
    ).first()
    if row is None:
        raise NotFound(f"no task {campaign_id}")
    done, total, imported = (int(v) for v in row)
    moves = campaign_table.transition(
        conn,
        campaign_id=campaign_id,
        event=campaign_table.CampaignEvent.CANCEL_IMPORT,
        actor=actor,
        now=now,
        note="import cancelled",
    )
    conn.execute(
        update(CAMPAIGN)
        .where(CAMPAIGN.c.id == campaign_id)
        .values(
            import_error=f"import cancelled by {actor} after {done} of {max(total, done)} rows; "
            f"the {imported} numbers imported so far are kept"
        )
    )
    return moves


def _publish(redis_url: str, moves: list[campaign_table.Move]) -> None:
    from redis import Redis

    from callcenter.bus import Bus
    from callcenter.notifier import Notifier

    client = Redis.from_url(redis_url)
    try:
        notifier = Notifier(Bus(client))
        for m in moves:
            notifier.publish(m.message())
    finally:
        client.close()


def report_rows(conn: Any, campaign_id: int) -> Iterable[tuple[Any, ...]]:
    return conn.execute(
        select(ISSUE.c.row_no, ISSUE.c.raw_number, ISSUE.c.reason, ISSUE.c.detail)
        .where(ISSUE.c.campaign_id == campaign_id)
        .order_by(ISSUE.c.row_no)
    ).all()


# --- writing spreadsheets --------------------------------------------------------------------------

# A cell starting with one of these runs as a formula when Excel, LibreOffice or Sheets open the file
# (`=HYPERLINK(...)`, `@SUM(...)`, `+cmd|...`); a tab or carriage return first hides the one after it.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: Any) -> Any:
    """A value as it may go into a CSV or XLSX the app writes: text that a spreadsheet would take for
    a formula gets a leading quote (shown as text, the characters kept); other values pass. Every
    writer of a spreadsheet goes through this (`spreadsheet_csv` does).

    >>> spreadsheet_cell("=1+1"), spreadsheet_cell("+8613800138000"), spreadsheet_cell(7)
    ("'=1+1", "'+8613800138000", 7)
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def spreadsheet_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A CSV for people to open in a spreadsheet: UTF-8 with a BOM (Excel then reads it as UTF-8),
    every cell through `spreadsheet_cell`."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow([spreadsheet_cell(h) for h in header])
    for row in rows:
        writer.writerow([spreadsheet_cell(v) for v in row])
    return out.getvalue()


def report_csv(conn: Any, campaign_id: int) -> str:
    """The import report as CSV: every row not imported, with the reason."""
    return spreadsheet_csv(["row", "number", "reason", "detail"], report_rows(conn, campaign_id))

"""Rows read line by line from local .jsonl/.json/.csv/.tsv/.txt files, so a malformed row is named by file and line.

datasets' Arrow readers are fast but stop at the first bad row with a message about an Arrow chunk ("JSON parse
error ... in row 79029", "An error occurred while generating the dataset"), and a stream stops there mid-training.
These readers are used

- for a stream's local files, always (a stream cannot be reread to find the row): `rows_stream`;
- for a materialised corpus, only when the fast reader failed: `clean_copies` finds the first bad row (error) or
  writes a copy without the bad rows, once per file version, into hfkit's cache (skip).

What counts as malformed: a line that is not JSON or not a JSON object; a CSV record whose field count differs from
the header's; a text column that holds a number, list or object; a line that is not UTF-8. With
`data.on_error: skip` each such row is skipped, the first few are logged with file and line, and the number of
distinct rows skipped goes to metrics.json (`data_rows_skipped`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

from .console import log
from .errors import DataError

SHOWN = 5  # skipped rows logged one by one; the rest are only counted


class Tally:
    """Malformed rows met while reading: raised (on_error=error) or remembered by (file, line) and skipped."""

    def __init__(self):
        self.rows: dict[tuple[str, int], str] = {}  # (file, line) -> why it was skipped

    def bad(self, key: str, on_error: str, path: str, line: int, reason: str) -> None:
        if on_error != "skip":
            raise DataError(f"{key}: '{path}' line {line}: {reason}; fix or delete that row, or set "
                            "data.on_error=skip to skip malformed rows (they are counted in metrics.json)")
        if (path, line) in self.rows:
            return
        self.rows[(path, line)] = reason
        if len(self.rows) <= SHOWN:
            log(f"{key}: skipped '{path}' line {line}: {reason}"
                + ("; further skipped rows are only counted" if len(self.rows) == SHOWN else ""))

    def add(self, key: str, rows: list) -> None:
        """Rows a cached clean copy skipped, without reading the file again."""
        for path, line, reason in rows:
            self.bad(key, "skip", path, int(line), reason)


TALLY = Tally()


def take_tally() -> int:
    """The number of distinct malformed rows skipped since the last call (which starts a new count)."""
    n = len(TALLY.rows)
    TALLY.rows = {}
    return n


def shared_count(accelerator) -> int:
    """Distinct rows skipped by any process (a stream's ranks may read the same file when it is split by row)."""
    rows = sorted(TALLY.rows)
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        rows = gather_object([rows])
        rows = [r for part in rows for r in part]
    return len({tuple(r) for r in rows})


# --------------------------------------------------------------------------------------------- readers
def _preview(text: str) -> str:
    text = text.strip()
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def _text_value(row: dict, text_column: str | None) -> str | None:
    """Why the row's text column cannot be text, or None when it can (a missing or null column is left to cleaning)."""
    if text_column is None or row.get(text_column) is None or isinstance(row[text_column], str):
        return None
    return f"column '{text_column}' holds a {type(row[text_column]).__name__}, not text"


def json_array(path: str) -> bool:
    """Whether a .json file holds one array (read whole) rather than one object per line."""
    with open(path, "rb") as fh:
        return fh.read(64).lstrip().startswith(b"[")


def chunked(items, size: int):
    """Lists of `size` consecutive items (the last may be shorter), without holding more than one."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def json_rows(path: str, *, key: str, on_error: str, text_column: str | None = None):
    """(line, row) for each JSON object of a .jsonl file (or a .json file holding one array of objects)."""
    if json_array(path):  # one array: it parses whole or not at all, so a bad row cannot be skipped
        with open(path, encoding="utf-8", errors="strict") as fh:
            try:
                rows = json.load(fh)
            except json.JSONDecodeError as e:
                raise DataError(f"{key}: '{path}' line {e.lineno} is not valid JSON ({e.msg}); a .json array "
                                "cannot skip a row: fix it, or write the file as .jsonl (one object per line)") from None
        for i, row in enumerate(rows if isinstance(rows, list) else [rows]):
            problem = "not a JSON object" if not isinstance(row, dict) else _text_value(row, text_column)
            if problem:
                TALLY.bad(key, on_error, path, i + 1, f"item {i + 1} of the array: {problem}")
                continue
            yield i + 1, row
        return
    for number, line in _utf8_lines(path, key=key, on_error=on_error):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            TALLY.bad(key, on_error, path, number, f"not valid JSON ({e.msg}, column {e.colno}): {_preview(line)}")
            continue
        problem = "not a JSON object" if not isinstance(row, dict) else _text_value(row, text_column)
        if problem:
            TALLY.bad(key, on_error, path, number, f"{problem}: {_preview(line)}")
            continue
        yield number, row


def _not_utf8(raw: bytes, e: UnicodeDecodeError) -> str:
    return (f"not UTF-8 (byte {raw[e.start]:#x} at column {e.start + 1}; a file in another encoding converts with "
            "iconv -f latin1 -t utf-8)")


def _utf8_lines(path: str, *, key: str, on_error: str):
    """(line number, text) for each line, with its line end; a line that is not UTF-8 is malformed."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                TALLY.bad(key, on_error, path, number, _not_utf8(raw, e))


def csv_rows(path: str, *, key: str, on_error: str, delimiter: str = ","):
    """(line, row) for each record of a CSV/TSV file with a header; a record whose field count differs is malformed.
    `line` is the line the record starts on (quoted fields may span lines)."""
    csv.field_size_limit(sys.maxsize)
    lines = _utf8_lines(path, key=key, on_error=on_error)
    numbers: list[int] = []  # the last line number fed to the reader (one item: memory stays flat on long files)

    def feed():
        for number, text in lines:
            numbers[:] = [number]
            yield text

    reader = csv.reader(feed(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    start = numbers[-1] + 1 if numbers else 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            TALLY.bad(key, on_error, path, start, f"unreadable CSV ({e})")
            start = numbers[-1] + 1
            continue
        first, start = start, numbers[-1] + 1
        if not record:  # a blank line
            continue
        if len(record) != len(header):
            TALLY.bad(key, on_error, path, first,
                      f"{len(record)} fields where the header has {len(header)}: {_preview(delimiter.join(record))}")
            continue
        yield first, dict(zip(header, record))


def text_rows(path: str, *, key: str, on_error: str):
    """(line, {"text": ...}) for each line of a text file, split as datasets' text reader splits it."""
    for number, text in _utf8_lines(path, key=key, on_error=on_error):
        for piece in text.splitlines() or [""]:
            yield number, {"text": piece}


def file_rows(builder: str, path: str, *, key: str, on_error: str, text_column: str | None = None):
    if builder == "json":
        return json_rows(path, key=key, on_error=on_error, text_column=text_column)
    if builder in ("csv", "tsv"):
        return csv_rows(path, key=key, on_error=on_error, delimiter="\t" if builder == "tsv" else ",")
    if builder == "text":
        return text_rows(path, key=key, on_error=on_error)
    raise ValueError(builder)


def line_readable(builder: str, sample_by: str = "line") -> bool:
    """Whether these readers handle the format (parquet is binary; a text file read by paragraph or whole is not
    split into rows by line)."""
    return builder in ("json", "csv", "tsv") or (builder == "text" and sample_by == "line")


# --------------------------------------------------------------------------------------------- streams
def rows_stream(builder: str, files: list[str], *, key: str, on_error: str, text_column: str):
    """A `datasets.IterableDataset` of the files' rows, one shard per file (as datasets' own streaming readers)."""
    from datasets import IterableDataset

    return IterableDataset.from_generator(
        _stream_rows, gen_kwargs={"files": list(files), "builder": builder, "key": key, "on_error": on_error,
                                  "text_column": text_column})


def _stream_rows(files: list[str], builder: str, key: str, on_error: str, text_column: str):
    for path in files:
        for number, row in file_rows(builder, path, key=key, on_error=on_error, text_column=text_column):
            if builder == "text":
                yield row
                continue
            if text_column not in row:
                raise DataError(f"{key}: no column '{text_column}' in the data; its columns are {', '.join(row)} "
                                f"('{path}' line {number}); set data.text_column")
            yield {text_column: row[text_column]}


# --------------------------------------------------------------------------------------------- materialised corpora
def clean_copies(builder: str, files: list[str], *, key: str, on_error: str, text_column: str | None,
                 cache_dir: Path) -> list[str]:
    """After the fast reader failed: raise for the first malformed row (on_error=error), or return copies of the
    files without their malformed rows (skip), written once per file version (path, size, mtime) under cache_dir
    with the list of rows skipped beside them."""
    out = []
    for path in files:
        if on_error != "skip":
            for _ in file_rows(builder, path, key=key, on_error=on_error, text_column=text_column):
                pass
            out.append(path)
            continue
        stat = Path(path).stat()
        digest = hashlib.sha256(json.dumps([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, builder,
                                            text_column]).encode()).hexdigest()[:16]
        folder = cache_dir / "clean" / digest
        target = folder / ("rows.csv" if builder in ("csv", "tsv") else "rows.jsonl" if builder == "json" else "rows.txt")
        report = folder / "skipped.json"
        if not report.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            before = set(TALLY.rows)
            partial = target.with_suffix(".partial")
            with open(partial, "w", encoding="utf-8", newline="") as fh:
                writer = None
                for _, row in file_rows(builder, path, key=key, on_error="skip", text_column=text_column):
                    if builder == "text":
                        fh.write(row["text"] + "\n")
                    elif builder == "json":
                        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    else:
                        if writer is None:
                            writer = csv.DictWriter(fh, fieldnames=list(row))
                            writer.writeheader()
                        writer.writerow(row)
            partial.replace(target)
            skipped = sorted(r for r in set(TALLY.rows) - before if r[0] == path)
            report.write_text(json.dumps({"source": path, "rows": [[p, n, TALLY.rows[(p, n)]] for p, n in skipped]}))
        else:
            rows = json.loads(report.read_text())["rows"]
            TALLY.add(key, [tuple(r) for r in rows])
            log(f"{key}: '{path}': using the copy without its {len(rows):,} malformed row(s) from {folder}")
        out.append(str(target))
    return out

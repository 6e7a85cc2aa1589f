"""Prediction and generation over input files of any size (`hfkit predict --file`, `hfkit generate --file`).

The input is read row by row (csv, tsv, jsonl, json, parquet, txt) and cut into chunks of `chunk_rows` rows. Each
chunk is sorted by length inside itself, so batches carry little padding, and its results are written as one part
file, `OUTPUT.parts/chunk-NNNNNNNN.jsonl` (or .parquet), renamed into place only when complete. Memory therefore
holds one chunk, whatever the file's size. When every part exists they are joined, in input order, into OUTPUT
(written beside it and renamed, so an older OUTPUT stays whole until then) and the parts are removed.

- A killed job starts again with `--resume`: complete parts are kept, a part half-written is not one, so every
  row is written exactly once. `job.json` in the parts folder records the input file (size and modification time),
  the run and the settings; a resume against anything else is refused.
- Under `torchrun` / `accelerate launch` process r predicts chunks r, r + W, r + 2W ... (W processes); process 0
  joins the parts after a barrier, so the output is the one file, in input order, that one process writes. A job
  may resume on another process count: the parts do not depend on it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError, OutputDirError
from .rows import chunked, json_array

CHUNK_ROWS = 4096  # rows sorted by length together: enough to batch similar lengths, small enough to stay flat
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text",
           ".text": "text"}
OUTPUTS = {".jsonl": "jsonl", ".parquet": "parquet"}


def input_format(path: str, key: str = "--file") -> str:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{key}: '{path}' is not a file")
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise DataError(f"{key}: '{path}' has an unknown extension; give .csv, .tsv, .jsonl, .json, .parquet or .txt")
    return fmt


def read_rows(path: str, fmt: str, key: str = "--file"):
    """Each row of the file as a dict, in file order, without reading the file whole (a .json array excepted)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS):
            yield from batch.to_pylist()
        return
    from .rows import file_rows

    for _, row in file_rows(fmt, path, key=key, on_error="error"):
        yield row


def count_rows(path: str, fmt: str) -> int | None:
    """Rows in the file, for the progress bar's time left (csv: lines - 1, exact unless a quoted field spans lines)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if fmt == "json" and json_array(path):
        return None
    lines = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            lines += block.count(b"\n")
    return max(lines - (1 if fmt in ("csv", "tsv") else 0), 0)


# --------------------------------------------------------------------------------------------- processes
def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (torchrun and accelerate launch both set it)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def barrier() -> None:
    """Wait for every process (gloo: it needs no GPU); a no-op for one process."""
    rank, size = world()
    if size == 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def place(model):
    """The model on this process's GPU when there is one (LOCAL_RANK picks it), else left on the CPU."""
    import torch

    if torch.cuda.is_available():
        return model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return model


# --------------------------------------------------------------------------------------------- parts
@dataclass
class Job:
    output: Path
    fmt: str  # jsonl | parquet

    @property
    def parts(self) -> Path:
        return self.output.with_name(self.output.name + ".parts")

    def part(self, k: int) -> Path:
        return self.parts / f"chunk-{k:08d}.{self.fmt}"


def output_format(output: Path) -> str:
    fmt = OUTPUTS.get(output.suffix.lower())
    if fmt is None:
        raise DataError(f"--output: '{output}' must end in .jsonl or .parquet")
    return fmt


def open_job(output: Path, identity: dict, *, resume: bool, overwrite: bool) -> Job:
    """The parts folder for this job: new, or (resume) the one a stopped job left, if it was the same job."""
    job = Job(output, output_format(output))
    record = job.parts / "job.json"
    rank, _ = world()
    if resume and output.exists() and not job.parts.exists():
        raise OutputDirError(f"--resume: '{output}' is complete already (no parts folder left); give --overwrite to "
                             "predict again")
    if job.parts.exists() and not resume and not overwrite:
        raise OutputDirError(f"--output: a stopped job's parts are in '{job.parts}'; add --resume to continue it, "
                             "or --overwrite to start again")
    if output.exists() and not resume and not overwrite:
        raise OutputDirError(f"--output: '{output}' exists; give --overwrite to replace it (it stays whole until the "
                             "new one is complete) or another path")
    if resume and record.is_file():
        before = json.loads(record.read_text(encoding="utf-8"))
        changed = [k for k in identity if before.get(k) != identity[k]]
        if changed:
            raise OutputDirError(f"--resume: the stopped job in '{job.parts}' differs in {', '.join(changed)} "
                                 f"(was {', '.join(str(before.get(k)) for k in changed)}); rerun it as it was, or "
                                 "--overwrite to start again")
        return job
    barrier()  # every process has checked before process 0 creates anything
    if rank == 0:
        if job.parts.exists():
            shutil.rmtree(job.parts)
        job.parts.mkdir(parents=True)
        _replace_text(record, json.dumps(identity, indent=2) + "\n")
    barrier()
    return job


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_part(job: Job, k: int, records: list[dict]) -> None:
    """Chunk k's records as one complete file (written aside, then renamed: a killed write leaves no part)."""
    path = job.part(k)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    if job.fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    os.replace(tmp, path)


def join_parts(job: Job, count: int) -> None:
    """Parts 0..count-1, in order, into the output file; then the parts folder goes."""
    missing = [k for k in range(count) if not job.part(k).is_file()]
    if missing:
        raise DataError(f"--output: {len(missing)} of {count} parts are missing in '{job.parts}' (first: chunk "
                        f"{missing[0]}); a process stopped early: rerun with --resume")
    tmp = job.output.with_name(job.output.name + f".tmp{os.getpid()}")
    if job.fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # One schema for all: a chunk whose rows all had no entities reads its list as list<null>.
        schema = pa.unify_schemas([pq.read_schema(job.part(k)) for k in range(count)], promote_options="permissive")
        with pq.ParquetWriter(tmp, schema) as writer:
            for k in range(count):
                writer.write_table(pq.read_table(job.part(k)).cast(schema))
    else:
        with open(tmp, "wb") as out:
            for k in range(count):
                with open(job.part(k), "rb") as part:
                    shutil.copyfileobj(part, out)
    os.replace(tmp, job.output)
    shutil.rmtree(job.parts)


# --------------------------------------------------------------------------------------------- the loop
def run_file(path: str, output: str | Path | None, predict_chunk, run_dir, identity: dict, *,
             chunk_rows: int = CHUNK_ROWS, resume: bool = False, overwrite: bool = False, progress: bool = True,
             emit=None, desc: str = "Predicting") -> dict:
    """Apply `predict_chunk(rows, k) -> records` to every chunk k of `path`, writing to `output` (see the module's
    docstring), or, without an output, handing each chunk's records to `emit` (one process only). `run_dir` and
    `identity` (the job's settings) go into job.json, so a resume with another run or settings is refused.
    Returns {rows, predicted, seconds, rows_per_second, output}."""
    from tqdm.auto import tqdm

    if chunk_rows < 1:
        raise DataError(f"chunk_rows: {chunk_rows}; give 1 or more")
    fmt = input_format(path)
    rank, size = world()
    run = Path(str(run_dir))
    identity = {"input": str(Path(path).resolve()), "input_bytes": Path(path).stat().st_size,
                "input_mtime_ns": Path(path).stat().st_mtime_ns, "chunk_rows": chunk_rows,
                "run": str(run.resolve()) if run.exists() else str(run_dir), **identity}
    job = None
    if output is not None:
        job = open_job(Path(output), identity, resume=resume, overwrite=overwrite)
    elif size > 1:
        raise DataError("--output: several processes need an output file to write one result in input order")
    bar = tqdm(total=count_rows(path, fmt), unit="rows", desc=desc, disable=not progress or rank != 0,
               dynamic_ncols=True)
    start, rows, predicted, k = time.perf_counter(), 0, 0, -1
    for k, chunk in enumerate(chunked(read_rows(path, fmt), chunk_rows)):
        rows += len(chunk)
        if job is not None and (k % size != rank or job.part(k).is_file()):
            bar.update(len(chunk))  # another process's chunk, or one a stopped run finished
            continue
        records = predict_chunk(chunk, k)
        predicted += len(chunk)
        if job is not None:
            write_part(job, k, records)
        else:
            emit(records)
        bar.update(len(chunk))
    bar.close()
    if job is not None:
        barrier()
        if rank == 0:
            join_parts(job, k + 1)
    seconds = time.perf_counter() - start
    return {"rows": rows, "predicted": predicted, "seconds": round(seconds, 3),
            "rows_per_second": round(predicted / seconds, 1) if seconds > 0 else None,
            "output": str(output) if output is not None else None}


def text_of(row: dict, column: str, path: str, key: str = "--file") -> str:
    if column not in row:
        raise DataError(f"{key}: no column '{column}' in {path}; its columns are {', '.join(row)}")
    value = row[column]
    return value if isinstance(value, str) else ("" if value is None else str(value))

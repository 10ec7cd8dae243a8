"""A zarr forecast store written chunk by chunk along ``init_time``: resumable, shardable, never half-published.

Creating the store writes every coordinate and the metadata, but no forecast values (a lazy template). Each
chunk of init times is then written into its own region (zarr chunks align with job chunks, so no two writers
ever touch the same zarr chunk) and recorded by a marker ``<store>.progress/chunk-NNNNNN.json``, created with
``os.link`` (atomic and exclusive: a chunk recorded twice is an error, not a silent overwrite). A rerun after a
crash writes only the chunks without a marker. The progress directory exists from before the store is created
until every chunk is recorded; then the ledger (which rank wrote which rows) moves into the store's attribute
``stlm_chunks`` and the directory is removed. The evaluator refuses a store whose progress directory exists.

A netCDF output is this store written beside the final name (``<name>.partial.zarr``), converted chunk by chunk
into a temporary file and renamed onto the final name (``os.replace``), so a reader never sees a partial file.
"""

from __future__ import annotations

from stlm.errors import StlmUserError

import json
import os
import shutil
import tempfile
from pathlib import Path

import dask.array as da
import xarray as xr

JOB_ATTR = "stlm_job"
LEDGER_ATTR = "stlm_chunks"


def progress_dir(store: str | Path) -> Path:
    """Where the chunk markers of an unfinished store live (beside it: zarr warns about foreign files inside)."""
    store = Path(store)
    return store.with_name(store.name + ".progress")


class StoreConflictError(StlmUserError, RuntimeError):
    """The output exists and belongs to a different forecast job."""


def lazy_template(ds_coords: xr.Dataset, variables: dict[str, tuple[tuple[str, ...], str, dict]], chunk: int) -> xr.Dataset:
    """A Dataset with ``ds_coords``' coordinates and lazy (never computed) float32 variables chunked by ``chunk``
    init times: ``variables`` maps a name to ``(dims, dtype, attrs)``."""
    out = ds_coords.copy()
    for name, (dims, dtype, attrs) in variables.items():
        shape = tuple(ds_coords.sizes[d] for d in dims)
        chunks = (min(chunk, shape[0]), *shape[1:])
        out[name] = (dims, da.zeros(shape, chunks=chunks, dtype=dtype), attrs)
        out[name].encoding["chunks"] = chunks
    return out


class ForecastStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.progress = progress_dir(self.path)

    # ------------------------------------------------------------------ state
    @property
    def exists(self) -> bool:
        return (self.path / "zarr.json").exists() or (self.path / ".zgroup").exists()

    @property
    def complete(self) -> bool:
        return self.exists and not self.progress.exists()

    def job(self) -> str | None:
        try:
            return xr.open_zarr(self.path, consolidated=False).attrs.get(JOB_ATTR)
        except Exception:  # a store whose metadata write was interrupted: treat as foreign
            return None

    def done(self) -> dict[int, dict]:
        """Recorded chunks: index -> marker (rank, first and last init time)."""
        markers = {}
        for path in sorted(self.progress.glob("chunk-*.json")):
            markers[int(path.stem.split("-")[1])] = json.loads(path.read_text())
        return markers

    # ------------------------------------------------------------------ writing
    def create_or_resume(self, template: xr.Dataset, overwrite: bool = False) -> str:
        """Create the store from ``template`` (attrs must hold ``stlm_job``), or keep an existing store of the
        same job. Returns ``created``, ``resumed`` or ``complete``."""
        job = template.attrs[JOB_ATTR]
        if self.path.exists() and not overwrite:
            if self.exists and self.job() == job:
                return "complete" if self.complete else "resumed"
            empty_dir = self.path.is_dir() and not any(self.path.iterdir())
            if not empty_dir:
                raise StoreConflictError(
                    f"{self.path} exists and was not written by this forecast job (different model, data, init "
                    "times or layout); choose another output or pass overwrite=true to replace it"
                )
        for path in (self.path, self.progress):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        self.progress.mkdir(parents=True)  # first: a crash during the metadata write leaves an unfinished store
        self.path.mkdir()
        template.to_zarr(self.path, mode="a", compute=False, consolidated=False, zarr_format=2)
        return "created"

    def write_chunk(self, index: int, chunk: xr.Dataset, start: int, rank: int) -> None:
        """Write the data variables of ``chunk`` into rows ``start ..`` of the init-time axis and record it."""
        dim = next(iter(chunk.data_vars.values())).dims[0]  # init_time (``time`` in the WB2 layout)
        stop = start + chunk.sizes[dim]
        data = xr.Dataset({name: (var.dims, var.values) for name, var in chunk.data_vars.items()})
        data.to_zarr(self.path, region={dim: slice(start, stop)}, consolidated=False)
        marker = {"rank": rank, "rows": [start, stop], "first": str(chunk[dim].values[0]), "last": str(chunk[dim].values[-1])}
        self._record(index, marker)

    def _record(self, index: int, marker: dict) -> None:
        final = self.progress / f"chunk-{index:06d}.json"
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(marker, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, final)  # FileExistsError if this chunk was already recorded
        finally:
            os.unlink(tmp)

    def finalize(self, n_chunks: int) -> None:
        """Check that every chunk is recorded, keep the ledger in the store's attributes, drop the progress dir."""
        if self.complete:
            return
        done = self.done()
        missing = sorted(set(range(n_chunks)) - set(done))
        if missing:
            raise RuntimeError(f"{self.path}: chunks {missing[:10]} were not written; rerun the same command to finish")
        import zarr

        ledger = {str(i): {"rank": m["rank"], "rows": m["rows"]} for i, m in sorted(done.items())}
        zarr.open_group(self.path, mode="r+").attrs[LEDGER_ATTR] = json.dumps(ledger)
        zarr.consolidate_metadata(str(self.path))  # plain xr.open_zarr(path) then reads one metadata file
        shutil.rmtree(self.progress)


def publish_netcdf(store: Path, final: Path, before_replace=None) -> None:
    """Convert a complete zarr store to netCDF at ``final`` through a temporary file in the same directory."""
    ds = xr.open_zarr(store, consolidated=False)
    for var in ds.variables.values():  # zarr codecs mean nothing to netCDF; keep the CF time encoding only
        var.encoding = {k: v for k, v in var.encoding.items() if k in ("units", "calendar", "dtype", "_FillValue")}
    for stale in final.parent.glob(f".{final.name}.*.tmp"):  # left by a publisher killed before its rename
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="netcdf4")
        if before_replace is not None:
            before_replace(Path(tmp))
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

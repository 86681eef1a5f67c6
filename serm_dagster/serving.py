"""Serving the registered relevance model: scoring a file of (query, doc_id | text) pairs with the champion (or
another alias), and exporting it to ONNX.

A pair's document is its ``text`` column where the file has one; otherwise its ``doc_id`` is looked up in the
ingested catalogue (``bronze/catalog``) and read as the model was trained to read it
(``spark_jobs.training.document_texts``: title, then description).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from assets.ingest import BRONZE_CATALOG
from models.evaluation import score_pairs
from models.export import export_folder
from serm_dagster.registry import CHAMPION, MODEL_NAME, Registry
from serm_dagster.resources import MlflowResource, ModelSettings, SparkResource
from serm_dagster.settings import SermPaths
from serm_dagster.storage import DeltaStore
from serm_dagster.tables import table_name
from spark_jobs.training import document_texts

FORMATS = {".csv": "CSV", ".parquet": "Parquet", ".jsonl": "JSON Lines", ".ndjson": "JSON Lines"}
OUTPUT_COLUMNS = ["score", "p0", "p1", "p2", "p3"]
_SHOWN = 5  # unknown ids or bad rows named in one message


class ServingError(ValueError):
    """Input or state that scoring or exporting cannot work with; the message says what to do."""


def _format(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ServingError(f"{what} {path}: the format is taken from the extension, one of "
                           f"{', '.join(FORMATS)}; got {suffix or 'none'!r}")
    return suffix


def read_pairs(path: str | Path) -> pd.DataFrame:
    """The pairs file (CSV, Parquet or JSON Lines by extension): ``query`` and ``doc_id`` or ``text``, ids and
    texts as strings (a CSV's "007" stays "007"), the rows in file order."""
    path = Path(path)
    suffix = _format(path, "pairs file")
    if not path.is_file():
        raise ServingError(f"pairs file {path} does not exist")
    if suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    if "query" not in frame.columns or not {"doc_id", "text"} & set(frame.columns):
        missing = "query" if "query" not in frame.columns else "doc_id or text"
        raise ServingError(f"pairs file {path} has no {missing} column (it has: {', '.join(map(str, frame.columns))}"
                           "); it needs query, and doc_id (looked up in the catalogue) or text (the document)")
    frame = frame.reset_index(drop=True)
    _no_blanks(frame, "query", path)
    _no_blanks(frame, "text" if "text" in frame.columns else "doc_id", path)
    return frame


def _no_blanks(frame: pd.DataFrame, column: str, path: Path) -> None:
    blank = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
    if blank.any():
        rows = [int(i) + 1 for i in frame.index[blank]]
        raise ServingError(f"pairs file {path}: {column} is empty in row{'s' if len(rows) > 1 else ''} "
                           f"{_listing(rows)} (rows counted from 1, the header not counted)")


def _listing(items: list) -> str:
    shown = ", ".join(str(i) for i in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def catalogue_texts(paths: SermPaths, doc_ids: list[str], spark=None) -> pd.Series:
    """doc_id -> the text the model reads, for the ids found in ``bronze/catalog``."""
    store, table = DeltaStore(paths.lakehouse), table_name(BRONZE_CATALOG)
    if not store.exists(table):
        raise ServingError(f"no catalogue ingested yet ({table}): put it into {paths.landing_catalog} and run "
                           "`serm ingest`, or give the pairs a text column")
    spark = spark or SparkResource().get_session()
    found = document_texts(store.read_spark(spark, table, where_in=("doc_id", sorted(set(doc_ids))))).toPandas()
    return found.set_index("doc_id")["doc_text"]


def with_document_texts(pairs: pd.DataFrame, paths: SermPaths, spark=None, source: str = "pairs file") -> pd.DataFrame:
    """``pairs`` with ``doc_text``: the ``text`` column, or each ``doc_id``'s catalogue text; an id the catalogue
    does not hold is an error naming it and its row."""
    if "text" in pairs.columns:
        return pairs.assign(doc_text=pairs["text"].astype(str))
    ids = pairs["doc_id"].astype(str)
    texts = catalogue_texts(paths, ids.tolist(), spark)
    unknown = ~ids.isin(texts.index)
    if unknown.any():
        named = [f"{doc_id!r} (row {int(row) + 1})" for row, doc_id in ids[unknown].items()]
        raise ServingError(f"{source}: doc_id {_listing(named)} not in the catalogue ({table_name(BRONZE_CATALOG)}): "
                           f"add {'them' if len(named) > 1 else 'it'} to {paths.landing_catalog} and run "
                           "`serm ingest`, or give the pairs a text column")
    return pairs.assign(doc_text=ids.map(texts))


def registry_for(paths: SermPaths) -> Registry:
    """The registry the Dagster runs log to (MlflowResource's, under SERM_HOME unless configured)."""
    return MlflowResource().registry(paths.home)


def aliased_version(registry: Registry, alias: str) -> str:
    """The registered version ``alias`` points to; none is an error saying what there is and what to run."""
    version = registry.alias_version(alias)
    if version is not None:
        return version
    if alias == CHAMPION:
        raise ServingError(f"no champion yet in the registry ({registry.tracking_uri}): train the seed model first "
                           "(`serm ingest`, then `serm train`; or `serm demo` on the simulated stream)")
    try:
        aliases = sorted(registry.client().get_registered_model(MODEL_NAME).aliases)
    except Exception:  # no registered model at all
        aliases = []
    raise ServingError(f"no version of {MODEL_NAME} has the alias {alias!r}; aliases: {', '.join(aliases) or 'none'}")


def score_frame(pairs: pd.DataFrame, paths: SermPaths, alias: str = CHAMPION, registry: Registry | None = None,
                settings: ModelSettings | None = None, spark=None) -> pd.DataFrame:
    """``pairs`` (``query``, and ``doc_id`` or ``text``) scored by the model with ``alias``: their columns, then
    ``score`` (the expected label) and the distribution ``p0..p3``."""
    registry = registry or registry_for(paths)
    version = aliased_version(registry, alias)
    documents = with_document_texts(pairs, paths, spark)
    if documents.empty:
        return pairs.assign(**{column: pd.Series(dtype=float) for column in OUTPUT_COLUMNS})
    scorer = (settings or ModelSettings()).scorer(registry.model_dir(version))
    scored = score_pairs(scorer, documents.assign(query=documents["query"].astype(str)))
    return pd.concat([pairs, scored[OUTPUT_COLUMNS]], axis=1)


def score_file(path: str | Path, paths: SermPaths, alias: str = CHAMPION, output: str | Path | None = None,
               **options) -> pd.DataFrame:
    """``score_frame`` of a pairs file, written to ``output`` (format by extension) when given."""
    if output is not None:
        _format(Path(output), "output file")
    scored = score_frame(read_pairs(path), paths, alias, **options)
    if output is not None:
        write_table(scored, Path(output))
    return scored


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    suffix = _format(path, "output file")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    return path


def export_onnx(paths: SermPaths, folder: str | Path, alias: str = CHAMPION,
                registry: Registry | None = None) -> dict:
    """The model with ``alias`` as ONNX in ``folder`` (``models.export``); returns what was written."""
    registry = registry or registry_for(paths)
    version = aliased_version(registry, alias)
    onnx_path = export_folder(registry.model_dir(version), folder,
                              metadata={"model_name": MODEL_NAME, "model_version": version, "alias": alias})
    return {"version": version, "alias": alias, "path": onnx_path,
            "files": sorted(p.name for p in Path(folder).iterdir())}

"""The sids stage: embed item texts, quantise them into SIDs, write a new data directory, report.

    python -m minirec.sids --category Industrial_and_Scientific --method rqkmeans
    python -m minirec.sids --category Office_Products --method rqkmeans_constrained --seed 42
    python -m minirec.sids --category Industrial_and_Scientific --method rqvae --epochs 200
    mlflow run . -e sids -P category=Office_Products -P method=rqvae --env-manager local

docs/upstream.md 3 (upstream ``rq/``). The new directory (``outputs/sids/<category>/<run id>`` unless
``--output_dir``) is validated before the run finishes and logged as the run's ``data/`` artifacts; later
stages take it as ``--data_dir <this run id>`` (or the folder).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from minirec.sids.settings import UPSTREAM_SEEDS, SidsSettings
from minirec.stage import Recipe


def target_items(files) -> dict[str, list[int]]:
    from minirec.data import read_split

    return {split: read_split(files.split(split), parse_histories=False)["item_id"].astype(int).tolist()
            for split in ("valid", "test")}


def save_method_artifacts(result, folder: Path) -> list[Path]:
    import torch

    from minirec.atomic import atomic_path

    saved = []
    if "codebooks" in result.artifacts:
        with atomic_path(folder / "codebooks.npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **{f"codebook_{i}": c for i, c in enumerate(result.artifacts["codebooks"])})
        saved.append(folder / "codebooks.npz")
    if "checkpoint" in result.artifacts:
        with atomic_path(folder / "rqvae_best_collision.pt") as tmp:
            torch.save(result.artifacts["checkpoint"], tmp)
        saved.append(folder / "rqvae_best_collision.pt")
    return saved


class SidsRecipe(Recipe):
    stage = "sids"
    settings_class = SidsSettings
    module = "minirec.sids"

    def source(self) -> str:
        return self.settings.embedding_model

    def run_name(self) -> str:
        return f"sids-{self.settings.method}-{self.settings.category}"

    def tags(self) -> dict[str, str]:
        return {"method": self.settings.method}

    def setup(self) -> None:
        from minirec.data import Catalogue, locate
        from minirec.devices import resolve_device

        self.started = time.perf_counter()
        self.files_read = locate(self.settings.category, self.settings.data_dir or None)
        self.catalogue = Catalogue.load(self.files_read)
        self.device = resolve_device(self.settings.device)

    def run(self) -> None:
        import mlflow

        from minirec.data import sha256_of
        from minirec.sids.embed import EmbeddingRecipe, cached_embeddings
        from minirec.sids.quantise import quantise
        from minirec.sids.text import item_texts
        from minirec.tracking import log_params

        settings = self.settings
        log_params({"device_resolved": self.device, "upstream_seed": UPSTREAM_SEEDS[settings.method]})
        text_cut = settings.switch("text_cut_2000")  # upstream empties fields of 2,000+ characters (8.1 N)
        recipe = EmbeddingRecipe(settings.embedding_model, text_cut, settings.max_length or None)
        texts = item_texts(self.catalogue.items, text_cut)
        tick = time.perf_counter()
        self.embedded = cached_embeddings(texts, recipe, sha256_of(self.files_read.items), settings.cache_dir,
                                          settings.batch_size, self.device)
        mlflow.log_metrics({"embedding_seconds": time.perf_counter() - tick,
                            "embedding_from_cache": float(self.embedded.from_cache)})
        log_params({"embedding_dim": self.embedded.vectors.shape[1], "embedding_key": self.embedded.key,
                    **{f"embedding_{k}": v for k, v in self.embedded.details.items()}})
        options = {"codebook_size": settings.codebook_size, "levels": settings.levels, "seed": settings.seed}
        if settings.method == "rqvae":
            options.update(epochs=settings.epochs, lr=settings.lr, eval_step=settings.eval_step, device=self.device)
        tick = time.perf_counter()
        self.result = quantise(settings.method, self.embedded.vectors, **options)
        mlflow.log_metric("quantise_seconds", time.perf_counter() - tick)

    def log(self) -> None:
        import mlflow

        from minirec.data.validate import validate_category
        from minirec.errors import DataInvalid
        from minirec.sids.report import plot_code_usage, write_report
        from minirec.sids.stats import flat_metrics, level_counts, sid_statistics
        from minirec.sids.writer import write_data_dir
        from minirec.tracking import log_params

        settings, result, embedded = self.settings, self.result, self.embedded
        out_dir = Path(settings.output_dir)
        mlflow.log_artifact(str(embedded.path), "embeddings")
        mlflow.log_artifact(str(embedded.path.with_suffix(".json")), "embeddings")
        log_params({f"quantiser_{k}": v for k, v in result.params.items()})
        for entry in result.history:
            mlflow.log_metrics({f"rqvae_{k}": v for k, v in entry.items() if k != "epoch"}, step=entry["epoch"])

        new_tokens = dict(enumerate(result.tokens))
        new_files = write_data_dir(self.files_read, new_tokens, out_dir)
        report = validate_category(new_files)
        mlflow.log_dict(report.to_json(), "validation.json")
        mlflow.log_metric("validation_ok", float(report.ok))
        if not report.ok:
            raise DataInvalid(f"the new data directory {new_files.root} failed validation:\n{report.message()}")

        targets = target_items(self.files_read)
        new_stats = {**sid_statistics(new_tokens, targets, embedded.vectors), "recon_mse_native": result.recon_mse}
        official_stats = sid_statistics(self.catalogue.item_tokens, targets, embedded.vectors)
        mlflow.log_metrics({**flat_metrics(new_stats, "new"), **flat_metrics(official_stats, "official"),
                            **result.metrics})
        mlflow.log_dict({"new": new_stats, "official": official_stats, "method_metrics": result.metrics,
                         "history": result.history}, "sid_stats.json")

        run_id = self.mlflow_run.info.run_id
        title = f"SIDs for {settings.category}: {settings.method} on {settings.embedding_model}"
        shown = {"run": run_id, "method": settings.method, "embedding model": settings.embedding_model,
                 "embedding dim": embedded.vectors.shape[1], "seed": settings.seed, "input data": self.files_read.root,
                 "new data": new_files.root, **{f"quantiser {k}": v for k, v in result.params.items()}}
        report_file = write_report(out_dir / "sid_report.md", title, shown, new_stats, official_stats)
        plot = plot_code_usage(out_dir / "code_usage.png", level_counts(new_tokens),
                               level_counts(self.catalogue.item_tokens), title)
        for path in [report_file, plot, *save_method_artifacts(result, out_dir)]:
            mlflow.log_artifact(str(path))
        mlflow.log_artifacts(str(new_files.root), f"data/{settings.category}")
        mlflow.log_metric("stage_seconds", time.perf_counter() - self.started)
        print(report_file.read_text())
        print(f"[sids] new data directory {new_files.root.parent}: use --data_dir {run_id} (or the folder)", flush=True)

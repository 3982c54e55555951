"""The data benchmark's verdicts and Markdown (bench/bench_data.py): issue 12's targets and the result tables."""

from __future__ import annotations

from typing import Any

MIB = 2**20
TARGET_RSS_GROWTH = 300 * 10**6  # issue 12: peak RSS at 47,000 rows within 300 MB of 1,000 rows
TARGET_CACHED_STEP_S = 60.0  # issue 12: first optimizer step within 60 s on a cached run at 47,000 rows


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 12's targets, judged on the new path wherever the sizes they name were measured."""
    found = []
    new = {(r["rows"], r["layout"]): r for r in rows if r["path"] == "new"}
    for layout in sorted({layout for _, layout in new}):
        sizes = sorted(n for n, lay in new if lay == layout)
        small, large = sizes[0], sizes[-1]
        if large > small:
            # The same run at both sizes (first with first, cached with cached); the larger growth counts.
            growths = [
                new[(large, layout)][kind]["max_rss_bytes"] - new[(small, layout)][kind]["max_rss_bytes"]
                for kind in ("first", "cached")
                if new[(small, layout)].get(kind, {}).get("max_rss_bytes")
                and new[(large, layout)].get(kind, {}).get("max_rss_bytes")
            ]
            if growths:
                growth = max(growths)
                found.append(
                    dict(
                        layout=layout,
                        target=f"peak RSS at {large:,} rows within 300 MB of {small:,} rows",
                        value=f"{growth / 10**6:+.0f} MB",
                        met=growth <= TARGET_RSS_GROWTH,
                        binding=(small, large) == (1000, 47000),
                    )
                )
        cached = new[(large, layout)].get("cached", {})
        if cached.get("first_step_s") is not None:
            found.append(
                dict(
                    layout=layout,
                    target=f"first step within 60 s, cached run at {large:,} rows",
                    value=f"{cached['first_step_s']:.1f} s",
                    met=cached["first_step_s"] <= TARGET_CACHED_STEP_S,
                    binding=large == 47000,
                )
            )
    return found


def _mib(value: int | None) -> str:
    return "–" if not value else f"{value / MIB:,.0f}"


def _seconds(run: dict[str, Any]) -> str:
    if not run:
        return "–"
    if run.get("first_step_s") is None:
        return f"failed ({run['stopped'] or 'exit ' + str(run['exit_code'])})"
    return f"{run['first_step_s']:.1f}"


def markdown_lines(result: dict[str, Any]) -> list[str]:
    """The Markdown section of a ``bench_data.json`` document (also part of ``bench.md``)."""
    s = result["settings"]
    infos = list(result["datasets"].values())
    distinct = min((i["distinct_images"] for i in infos), default=s["distinct_images"])
    mean_kb = sum(i["mean_image_bytes"] for i in infos) / max(len(infos), 1) / 1000
    shapes = ", ".join("x".join(map(str, shape)) for shape in (infos[0]["image_shapes"] if infos else []))
    lines = [
        "## Data path: `vigos train` to the first optimizer step",
        "",
        f"Generated rows shaped like Vision-SR1-47K (`problem`, `images` = one image, `answer`), JPEGs of {shapes} "
        f"(mean {mean_kb:.0f} KB): {distinct} distinct images whose bytes are reused across rows (each row stores its "
        "own copy), every row's problem and answer distinct. parquet = hub-style shards with the image bytes "
        "embedded; jsonl = one JPEG file per row, relative paths. `configs/tiny.yaml` (tiny model), max_steps 1. "
        f"old = today's path (commit {s['old_commit']}), new = this checkout. First run on empty `VIGOS_CACHE` and "
        "`HF_DATASETS_CACHE`; cached = a second run on what the first left there. Time from process start to "
        "the first optimizer step (first line of metrics.jsonl); peak RSS = that of the largest process, the "
        "training process or a worker it started (exact: ru_maxrss); tree RSS = the peak of the summed RSS of the "
        "process and its workers, polled every 0.2 s (shared pages of forked workers counted in each; short peaks "
        "missed), first run; validation rows/s as logged by the first run (– when it logs none).",
        "",
        "| rows | layout | path | first run: step 1 (s) | cached run: step 1 (s) | peak RSS (MiB) | "
        "cached peak RSS (MiB) | tree RSS (MiB) | validation rows/s |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        first, cached = row.get("first", {}), row.get("cached", {})
        rate = first.get("validation_rows_per_s")
        lines.append(
            f"| {row['rows']:,} | {row['layout']} | {row['path']} | {_seconds(first)} | {_seconds(cached)} | "
            f"{_mib(first.get('max_rss_bytes'))} | {_mib(cached.get('max_rss_bytes'))} | "
            f"{_mib(first.get('peak_tree_rss_bytes'))} | {'–' if rate is None else f'{rate:,.0f}'} |"
        )
    if result["datasets"]:
        lines += [
            "",
            "| dataset | rows | disk (MB) | generation (s) | per 1,000 rows (s) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for info in result["datasets"].values():
            seconds = info["pool_seconds"] + info["write_seconds"]
            digits = 0 if info["disk_bytes"] > 10**7 else 2
            lines.append(
                f"| {info['layout']} | {info['rows']:,} | {info['disk_bytes'] / 10**6:,.{digits}f} | {seconds:.1f} | "
                f"{info['write_seconds'] / info['rows'] * 1000:.1f} |"
            )
        lines += [
            "",
            "Generation: the image pool (drawn once, shared by all sizes) plus writing; per 1,000 rows "
            "counts the writing only. A cached dataset shows the time of the run that wrote it.",
        ]
    if result.get("targets"):
        lines += [
            "",
            "| issue 12 target (new path) | value | met | at the target's size |",
            "| --- | ---: | --- | --- |",
        ]
        for t in result["targets"]:
            lines.append(
                f"| {t['target']} ({t['layout']}) | {t['value']} | {'yes' if t['met'] else 'no'} | "
                f"{'yes' if t['binding'] else 'no (reduced size)'} |"
            )
    return lines

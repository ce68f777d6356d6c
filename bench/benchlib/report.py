"""Medians, ratios and the verdict against imgfs's targets, as markdown and as JSON.

A ratio is taken within each run (imgfs and its reference measured seconds apart) and the median of
those ratios is reported: on a noisy machine that is steadier than a ratio of two medians.
"""

from __future__ import annotations

import statistics
from typing import Optional

from benchlib import copyall
from benchlib.suite import MEASUREMENTS, READERS

SEQ_KEYS = ("seq_128k_cold", "seq_128k", "seq_1m")
READY_LIMIT_S = 0.3  # the disk, optical and DMG parts
ISO_READY_LIMIT_S = 0.1  # issue 14's goal for the ISO
COPY_LIMIT = 2.0  # `cp -r` of the mount at most this many times `7zz x` of the image
# issue 14's goals: {row: (reference, the ratio imgfs/reference must be at least (>) or at most (<))}
RATIO_GOALS = {"random_4k": ("fuseiso", ">", 1.5), "find": ("fuseiso", "<", 0.7), "ls_lR": ("fuseiso", "<", 1.0),
               "seq_hashed": ("raw", ">", 0.9), "seq_1m": ("raw", ">", 0.5)}
RSS_BASE_MIB = 64


def summarize(runs: list[dict], readers: tuple[str, ...] = READERS) -> tuple[dict, dict]:
    """({key: {reader: median}}, {key: {reference: median of per-run imgfs/reference}})."""
    medians: dict = {}
    ratios: dict = {}
    for key in runs[0]:
        present = [r for r in readers if r in runs[0][key]] + [r for r in runs[0][key] if r not in readers]
        medians[key] = {r: statistics.median(run[key][r] for run in runs) for r in present}
        ratios[key] = {ref: statistics.median(run[key]["imgfs"] / run[key][ref] for run in runs)
                       for ref in present if ref != "imgfs"}
    return medians, ratios


def goals(medians: dict, ratios: dict, cache_mib: float) -> dict[str, tuple[str, bool, str]]:
    """{row key: (target, met?, how far off)} for every row that has a target."""
    out = {}
    for key, (reference, sense, bound) in RATIO_GOALS.items():
        if reference not in ratios.get(key, {}):
            continue
        r = ratios[key][reference]
        ok = r >= bound if sense == ">" else r <= bound
        what = f"{reference}'s time" if key in ("find", "ls_lR") else reference
        out[key] = (f"{'≥' if sense == '>' else '≤'} {bound:g}× {what}", ok, "" if ok else f"{r:.2f}× {what}")
    copy = ratios.get("copy_all", {}).get("7zz x")
    if copy is not None:
        out["copy_all"] = (f"≤ {COPY_LIMIT:g}× `7zz x`'s time", copy <= COPY_LIMIT,
                           "" if copy <= COPY_LIMIT else f"{copy:.2f}× `7zz x`'s time")
    out["ready_s"] = ready_verdict(medians["ready_s"]["imgfs"], ISO_READY_LIMIT_S)
    out["rss"] = rss_verdict(medians["rss"]["imgfs"], cache_mib)
    return out


def ready_verdict(ready: float, limit: float = READY_LIMIT_S) -> tuple[str, bool, str]:
    return (f"≤ {limit} s", ready <= limit, "" if ready <= limit else f"{ready / limit:.2f}× the limit")


def rss_verdict(rss: float, cache_mib: float) -> tuple[str, bool, str]:
    limit = RSS_BASE_MIB + cache_mib
    return (f"≤ {RSS_BASE_MIB} MiB + cache ({cache_mib:.0f} MiB)", rss <= limit,
            "" if rss <= limit else f"{rss - limit:.0f} MiB over")


def fmt(value: Optional[float], unit: str) -> str:
    if value is None:
        return "–"
    if unit in ("MB/s", "reads/s"):
        return f"{value:,.0f}"
    return f"{value:.1f}" if unit == "MiB" else f"{value:.3f}"


def main_table(medians: dict, ratios: dict, verdicts: dict) -> list[str]:
    lines = ["| measurement | unit | raw pread | imgfs | fuseiso | imgfs/raw | imgfs/fuseiso | target "
             "| verdict |", "|---|---|---|---|---|---|---|---|---|"]
    rows = [(m.key, m.label, m.unit) for m in MEASUREMENTS if m.key in medians]
    rows.insert(len(rows) - 1, ("ready_s", "mount ready (mount command + first `ls`)", "s"))
    for key, label, unit in rows:
        med, rat = medians[key], ratios[key]
        target, ok, miss = verdicts.get(key, ("", True, ""))
        verdict = "" if not target else ("met" if ok else f"**MISSED** ({miss})")
        cells = [fmt(med.get(r), unit) for r in READERS]
        ratio_cells = [f"{rat[ref]:.2f}×" if ref in rat else "–" for ref in ("raw", "fuseiso")]
        row = [label, unit, *cells, *ratio_cells, target, verdict]
        lines.append(f"| {' | '.join(row)} |")
    return lines


def parse_table(parse: dict[str, dict]) -> list[str]:
    lines = ["| image | entries | pycdlib `open()` s | pycdlib peak RSS MiB | imgfs full walk (library) s "
             "| its peak RSS MiB | `imgfs ls IMG -R` s | its peak RSS MiB | imgfs mount ready s "
             "| fuseiso mount ready s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in parse.items():
        ready = p["imgfs_ready_s"]
        flag = "" if ready <= ISO_READY_LIMIT_S else f" **MISSED** (≤ {ISO_READY_LIMIT_S} s)"
        row = [name, f"{p['imgfs_walk_entries']:,.0f}", f"{p['pycdlib_open_s']:.3f}",
               f"{p['pycdlib_rss_mib']:.1f}", f"{p['imgfs_walk_s']:.3f}", f"{p['imgfs_walk_rss_mib']:.1f}",
               f"{p['imgfs_ls_R_s']:.3f}", f"{p['imgfs_ls_R_rss_mib']:.1f}", f"{ready:.3f}{flag}",
               f"{p['fuseiso_ready_s']:.3f}"]
        lines.append(f"| {' | '.join(row)} |")
    return lines


NOTES = """\
- Each FUSE measurement runs on a fresh mount, so the kernel's page cache of the mounted file is empty.
- *warm*: the image file is in the page cache for every reader; *cold*: `sync; echo 3 > drop_caches`
  right before each reader (before its mount), so the image comes from the disk for everyone.
- raw pread reads /bigfile's bytes straight from the .iso at its extent's offset. Every reader is
  the same Python loop of `os.pread` calls on one descriptor. MB = 10^6 bytes; RSS in MiB (VmHWM).
- Warm, raw pread is a copy out of the page cache (about 10 GB/s on this machine class), beyond
  what any FUSE round trip allows (performance.md: 3.9-4.5 GB/s at best); against raw, the cold
  row is the telling one.
- Values are medians over the runs; ratios are medians of the ratios taken within each run.
- fuseiso runs as `fuseiso -n -p IMAGE MNT`, its mount is ready once it is in /proc/mounts and listed."""


def render(meta: dict, medians: dict, ratios: dict, verdicts: dict, checks: dict, parse: dict,
           problems: list[str]) -> str:
    out = [f"# imgfs benchmark, {meta['date']}", "", f"`{meta['command']}`: {meta['runs']} run(s); "
           f"{meta['imgfs_version']} = {meta['imgfs']}, checkout at git {meta['git']}; "
           f"fuseiso {meta['fuseiso_version']}; {meta['cpus']} vCPU, Linux {meta['kernel']}, load average "
           f"{meta['loadavg_at_start']:.1f} at the start.", "",
           f"Image: `{meta['image']}` ({meta['image_mib']:,.0f} MiB): /bigfile of {meta['big_mib']} MiB "
           f"at byte {meta['big_offset']:,} + {meta['small_files']:,} small files; "
           f"{meta['random_reads']:,} random reads.", "", *main_table(medians, ratios, verdicts), "",
           "## Copying everything out (into tmpfs)", "",
           *copyall.table(medians, ratios, "7zz x", COPY_LIMIT), "",
           "## Parsing a whole image (pycdlib's eager open against imgfs)", "", *parse_table(parse), "",
           "pycdlib `open()` and the imgfs walk are timed inside a fresh interpreter (start-up excluded); "
           "`imgfs ls -R` is the whole command, start-up included.", "", "## Method", "", NOTES, "",
           "## Checks", ""]
    for reader, c in checks.items():
        out.append(f"- {reader}: {c['entries']:,} entries under the mount; {c['blocks_wrong']} of "
                   f"{c['blocks_checked']} sampled 4 KiB blocks of /bigfile differ from the image; "
                   f"size {c['bigfile_size']:,}.")
    out += [f"- PROBLEM: {p}" for p in problems] or ["- no problems seen"]
    missed = [f"{key}: {miss}" for key, (_, ok, miss) in verdicts.items() if not ok]
    out += ["", "## Targets missed", ""] + ([f"- {m}" for m in missed] or ["- none"])
    return "\n".join(out) + "\n"

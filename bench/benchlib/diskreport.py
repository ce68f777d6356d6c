"""The "Disks" section of the report: medians, ratios within each run, and verdicts, as for the ISO part."""

from __future__ import annotations

from benchlib import copyall
from benchlib.disksuite import ALL_READERS, FUSE2FS, MEASUREMENTS
from benchlib.report import fmt, ready_verdict, rss_verdict, summarize

HEADING = "## Disks"
SEQ_KEYS = ("seq_128k_cold", "seq_128k", "seq_1m")
WALK_KEYS = ("find", "ls_lR")
RAW_TARGET = 0.8
WHOLE_DISK = "whole disk (fuse2fs: the ext4 partition)"


def summarize_disk(runs: list[dict]) -> tuple[dict, dict]:
    return summarize(runs, ALL_READERS)


def goals(medians: dict, ratios: dict, cache_mib: float) -> dict[str, tuple[str, bool, str]]:
    """{row key: (target, met?, how far off)}; find and ls -lR have one only when fuse2fs ran."""
    out = {}
    for key, rat in ratios.items():
        kind = key.rpartition(".")[2]
        if kind in SEQ_KEYS:
            raw = rat["raw"]
            out[key] = (f"≥ {RAW_TARGET}× raw", raw >= RAW_TARGET,
                        "" if raw >= RAW_TARGET else f"{raw:.3f}× raw, needs {RAW_TARGET}×")
        elif kind in WALK_KEYS and FUSE2FS in rat:
            r = rat[FUSE2FS]
            out[key] = ("≤ fuse2fs's time", r <= 1, "" if r <= 1 else f"{r:.2f}× fuse2fs's time")
    out["ready_s"] = ready_verdict(medians["ready_s"]["imgfs"])
    out["ext4.rss"] = rss_verdict(medians["ext4.rss"]["imgfs"], cache_mib)
    return out


def rows(medians: dict) -> list[tuple[str, str, str, str]]:
    """(key, label, partition, unit) in table order; mount-ready goes just before RSS."""
    out = [(f"{fs}.{m.key}", m.label, WHOLE_DISK if m.key == "rss" else fs, m.unit)
           for m in MEASUREMENTS for fs in m.volumes if f"{fs}.{m.key}" in medians]
    out.insert(len(out) - 1, ("ready_s", "mount ready (mount command + first `ls`)", WHOLE_DISK, "s"))
    return out


def table(medians: dict, ratios: dict, verdicts: dict) -> list[str]:
    lines = ["| measurement | partition | unit | raw pread | imgfs | fuse2fs | imgfs/raw | imgfs/fuse2fs | target "
             "| verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, label, where, unit in rows(medians):
        med, rat = medians[key], ratios[key]
        target, ok, miss = verdicts.get(key, ("", True, ""))
        verdict = "" if not target else ("met" if ok else f"**MISSED** ({miss})")
        cells = [fmt(med.get(r), unit) for r in ALL_READERS]
        ratio_cells = [f"{rat[ref]:.2f}×" if ref in rat else "–" for ref in ("raw", FUSE2FS)]
        lines.append(f"| {' | '.join([label, where, unit, *cells, *ratio_cells, target or '–', verdict])} |")
    return lines


NOTES = """\
- The disk is a GPT image with two partitions, built without root: ext4 (`mke2fs -d`) holding /bigfile
  and the small files, FAT32 (`mkfs.fat -F 32` + `mcopy`) holding /bigfile; each /bigfile is pseudo-random
  data written into a fresh filesystem. imgfs mounts the whole disk (one folder per partition);
  fuse2fs (`fuse2fs IMG MNT -o ro,fakeroot`) mounts the ext4 partition's own image file, which holds the
  same bytes as partition 1.
- raw pread reads /bigfile's byte ranges (ext4: `debugfs -R "stat /bigfile"`; FAT32: the cluster runs from
  `mshowfat` and the boot sector) from the disk image, in file order, with the same request size.
- As in the ISO part: a fresh mount per measurement; *warm* = the images in the page cache, *cold* =
  `sync; echo 3 > drop_caches` right before each reader; medians over the runs; ratios are medians of
  the ratios taken within each run. Mount-ready is the median over the warm mounts of each run.
- find and ls -lR have no target in the brief; `≤ fuse2fs's time` mirrors the ISO part's `≤ fuseiso's time`.
- The RSS workload is `ls -lR` of the whole mount plus a full read of every /bigfile in it: for imgfs both
  partitions, for fuse2fs the ext4 one."""


def render(meta: dict, medians: dict, ratios: dict, verdicts: dict, checks: dict, problems: list[str]) -> str:
    out = [HEADING, "", f"`{meta['command']}`, {meta['date']}: {meta['runs']} run(s); {meta['imgfs_version']}"
           f" = {meta['imgfs']}, checkout at git {meta['git']}; fuse2fs {meta['fuse2fs_version']}; "
           f"{meta['cpus']} vCPU, Linux {meta['kernel']}, load average {meta['loadavg_at_start']:.1f} at the start.",
           "", f"Disk: `{meta['disk']}` ({meta['disk_mib']:,.0f} MiB, GPT). " + "; ".join(meta["partitions"]) + ".",
           "", *table(medians, ratios, verdicts), "", "### Copying everything off the ext4 partition (into tmpfs)", "",
           *copyall.table(medians, ratios, "7zz x", 2.0, prefix="ext4."), "", "### Method (disks)", "", NOTES, "",
           "### Checks (disks)", ""]
    for name, c in checks.items():
        out.append(f"- {name}: {c['entries']:,} entries; {c['blocks_wrong']} of {c['blocks_checked']} sampled "
                   f"4 KiB blocks of /bigfile differ from the disk image; size {c['bigfile_size']:,}.")
    out += [f"- PROBLEM: {p}" for p in problems] or ["- no problems seen"]
    missed = [f"{key}: {miss}" for key, (_, ok, miss) in verdicts.items() if not ok]
    out += ["", "### Targets missed (disks)", ""] + ([f"- {m}" for m in missed] or ["- none"])
    return "\n".join(out) + "\n"

"""The "Disks" section of the report: medians, ratios within each run, and verdicts, as for the ISO part."""

from __future__ import annotations

from benchlib.disksuite import ALL_READERS, FUSE2FS, MEASUREMENTS, NTFS3G
from benchlib.report import fmt, ready_verdict, rss_verdict, summarize

HEADING = "## Disks"
SEQ_KEYS = ("seq_128k_cold", "seq_128k", "seq_1m")
WALK_KEYS = ("find", "ls_lR")
RAW_TARGET = 0.8
WHOLE_DISK = "whole disk (a peer: its partition)"
PEER_OF = {"ext4": FUSE2FS, "ntfs": NTFS3G}  # the driver each partition is compared with


def summarize_disk(runs: list[dict]) -> tuple[dict, dict]:
    return summarize(runs, ALL_READERS)


def goals(medians: dict, ratios: dict, cache_mib: float) -> dict[str, tuple[str, bool, str]]:
    """{row key: (target, met?, how far off)}; find and ls -lR have one only when the partition's peer ran."""
    out = {}
    for key, rat in ratios.items():
        fs, _, kind = key.rpartition(".")
        peer = PEER_OF.get(fs)
        if kind in SEQ_KEYS:
            raw = rat["raw"]
            out[key] = (f"≥ {RAW_TARGET}× raw", raw >= RAW_TARGET,
                        "" if raw >= RAW_TARGET else f"{raw:.3f}× raw, needs {RAW_TARGET}×")
        elif kind in WALK_KEYS and peer in rat:
            r = rat[peer]
            out[key] = (f"≤ {peer}'s time", r <= 1, "" if r <= 1 else f"{r:.2f}× {peer}'s time")
    out["ready_s"] = ready_verdict(medians["ready_s"]["imgfs"])
    for key in medians:
        if key.endswith(".rss"):
            out[key] = rss_verdict(medians[key]["imgfs"], cache_mib)
    return out


def rows(medians: dict) -> list[tuple[str, str, str, str]]:
    """(key, label, partition, unit) in table order; mount-ready goes just before RSS."""
    out = [(f"{fs}.{m.key}", m.label, fs, m.unit) for m in MEASUREMENTS for fs in m.volumes
           if f"{fs}.{m.key}" in medians]
    first_rss = next((i for i, row in enumerate(out) if row[0].endswith(".rss")), len(out))
    out.insert(first_rss, ("ready_s", "mount ready (mount command + first `ls`)", WHOLE_DISK, "s"))
    return out


def table(medians: dict, ratios: dict, verdicts: dict) -> list[str]:
    lines = ["| measurement | partition | unit | raw pread | imgfs | peer | imgfs/raw | imgfs/peer | target "
             "| verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, label, where, unit in rows(medians):
        med, rat = medians[key], ratios[key]
        target, ok, miss = verdicts.get(key, ("", True, ""))
        verdict = "" if not target else ("met" if ok else f"**MISSED** ({miss})")
        if key == "ready_s":  # one figure per driver: each mounts its own partition
            peer_cell = ", ".join(f"{p} {fmt(med[p], unit)}" for p in PEER_OF.values() if p in med) or "–"
            peer_ratio = ", ".join(f"{rat[p]:.2f}× {p}" for p in PEER_OF.values() if p in rat) or "–"
        else:
            peer = PEER_OF.get(where, "") if not key.endswith(".rss") else PEER_OF.get(key.partition(".")[0], "")
            peer_cell = f"{peer} {fmt(med[peer], unit)}" if peer in med else "–"
            peer_ratio = f"{rat[peer]:.2f}×" if peer in rat else "–"
        raw_ratio = f"{rat['raw']:.2f}×" if "raw" in rat else "–"
        cells = [fmt(med.get("raw"), unit), fmt(med.get("imgfs"), unit), peer_cell, raw_ratio, peer_ratio]
        place = WHOLE_DISK if key.endswith(".rss") else where
        lines.append(f"| {' | '.join([label, place, unit, *cells, target or '–', verdict])} |")
    return lines


NOTES = """\
- The disk is a GPT image with three partitions, built without loop devices: ext4 (`mke2fs -d`) holding
  /bigfile and the small files, FAT32 (`mkfs.fat -F 32` + `mcopy`) holding /bigfile, NTFS (`mkntfs -c 4096`,
  then /bigfile and the same small files written through an ntfs-3g mount); each /bigfile is
  pseudo-random data written into a fresh filesystem. imgfs mounts the whole disk (one folder per
  partition); the peers mount their partition's own image file, which holds the same bytes as the
  partition: fuse2fs (`fuse2fs IMG MNT -o ro,fakeroot`) the ext4 one, ntfs-3g (`ntfs-3g -o ro IMG MNT`) the
  NTFS one.
- raw pread reads /bigfile's byte ranges (ext4: `debugfs -R "stat /bigfile"`; FAT32: the cluster runs from
  `mshowfat` and the boot sector; NTFS: the run list from `ntfsinfo -v`) from the disk image, in file
  order, with the same request size.
- `cp -r` copies the NTFS partition's whole tree (/bigfile and the small files) into a fresh folder of
  /dev/shm (memory), removed after each copy.
- As in the ISO part: a fresh mount per measurement; *warm* = the images in the page cache, *cold* =
  `sync; echo 3 > drop_caches` right before each reader; medians over the runs; ratios are medians of
  the ratios taken within each run. Mount-ready is the median over the warm mounts of each run.
- find and ls -lR: on ext4 `≤ fuse2fs's time` mirrors the ISO part's `≤ fuseiso's time`; on NTFS
  `≤ ntfs-3g's time` is the brief's target.
- The RSS workload is `ls -lR` of the whole mount plus a full read of every /bigfile in it: for imgfs every
  partition (so its two RSS rows measure the same workload twice), for a peer its own partition."""


def render(meta: dict, medians: dict, ratios: dict, verdicts: dict, checks: dict, problems: list[str]) -> str:
    out = [HEADING, "", f"`{meta['command']}`, {meta['date']}: {meta['runs']} run(s); {meta['imgfs_version']}"
           f" = {meta['imgfs']}, checkout at git {meta['git']}; fuse2fs {meta['fuse2fs_version']}; "
           f"ntfs-3g {meta.get('ntfs3g_version', '–')}; "
           f"{meta['cpus']} vCPU, Linux {meta['kernel']}, load average {meta['loadavg_at_start']:.1f} at the start.",
           "", f"Disk: `{meta['disk']}` ({meta['disk_mib']:,.0f} MiB, GPT). " + "; ".join(meta["partitions"]) + ".",
           "", *table(medians, ratios, verdicts), "", "### Method (disks)", "", NOTES, "", "### Checks (disks)", ""]
    for name, c in checks.items():
        out.append(f"- {name}: {c['entries']:,} entries; {c['blocks_wrong']} of {c['blocks_checked']} sampled "
                   f"4 KiB blocks of /bigfile differ from the disk image; size {c['bigfile_size']:,}.")
    out += [f"- PROBLEM: {p}" for p in problems] or ["- no problems seen"]
    missed = [f"{key}: {miss}" for key, (_, ok, miss) in verdicts.items() if not ok]
    out += ["", "### Targets missed (disks)", ""] + ([f"- {m}" for m in missed] or ["- none"])
    return "\n".join(out) + "\n"

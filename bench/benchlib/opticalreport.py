"""The "Optical discs" section of the report: medians, ratios within each run, verdicts."""

from __future__ import annotations

from benchlib.opticalsuite import ALL_READERS, BCHUNK, FUSEISO, MEASUREMENTS
from benchlib.report import fmt, ready_verdict, summarize

HEADING = "## Optical discs"
DATA_RAW_TARGET = 0.5  # of a raw pread of the same 2352-byte sectors
DATA_PEER_TARGET = 1.0  # of fuseiso on the same BIN
WAV_RAW_TARGET = 0.8


def summarize_optical(runs: list[dict]) -> tuple[dict, dict]:
    return summarize(runs, ALL_READERS)


def goals(medians: dict, ratios: dict) -> dict[str, tuple[str, bool, str]]:
    """{row key: (target, met?, how far off)}; the whole-disc rows have none (the ratio is the result)."""
    out = {}
    for key, rat in ratios.items():
        if key.startswith("data.seq"):
            misses = [f"{rat['raw']:.2f}× raw, needs {DATA_RAW_TARGET}×"] if rat["raw"] < DATA_RAW_TARGET else []
            if FUSEISO in rat and rat[FUSEISO] < DATA_PEER_TARGET:
                misses.append(f"{rat[FUSEISO]:.2f}× fuseiso, needs {DATA_PEER_TARGET:.0f}×")
            out[key] = (f"≥ {DATA_RAW_TARGET}× raw, ≥ fuseiso", not misses, "; ".join(misses))
        elif key.startswith("wav.seq"):
            raw = rat["raw"]
            out[key] = (f"≥ {WAV_RAW_TARGET}× raw", raw >= WAV_RAW_TARGET,
                        "" if raw >= WAV_RAW_TARGET else f"{raw:.2f}× raw, needs {WAV_RAW_TARGET}×")
    if "imgfs" in medians.get("ready_s", {}):
        out["ready_s"] = ready_verdict(medians["ready_s"]["imgfs"])
    return out


def rows(medians: dict) -> list[tuple[str, str, str, str]]:
    """(key, label, disc, unit) in table order, mount-ready last."""
    discs = {"data": "MODE1/2352 BIN/CUE", "audio": "audio BIN/CUE"}
    out = [(m.key, m.label, discs[m.disc], m.unit) for m in MEASUREMENTS if m.key in medians]
    if medians.get("ready_s"):
        out.append(("ready_s", "mount ready (mount command + first `ls`)", discs["data"], "s"))
    return out


def table(medians: dict, ratios: dict, verdicts: dict) -> list[str]:
    lines = ["| measurement | disc | unit | raw pread | imgfs | fuseiso | bchunk | imgfs/raw | imgfs/fuseiso "
             "| imgfs/bchunk | target | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, label, disc, unit in rows(medians):
        med, rat = medians[key], ratios.get(key, {})
        target, ok, miss = verdicts.get(key, ("", True, ""))
        verdict = "" if not target else ("met" if ok else f"**MISSED** ({miss})")
        cells = [fmt(med.get(r), unit) for r in ALL_READERS]
        ratio_cells = [f"{rat[ref]:.2f}×" if ref in rat else "–" for ref in ("raw", FUSEISO, BCHUNK)]
        lines.append(f"| {' | '.join([label, disc, unit, *cells, *ratio_cells, target or '–', verdict or '–'])} |")
    return lines


NOTES = """\
- The data disc is the ISO part's image turned into one MODE1/2352 track (sync, BCD MSF header, mode 1,
  the 2048 bytes; the 288 EDC/ECC bytes left zero, which nobody here checks: imgfs only with
  `-o verify`, off by default). imgfs mounts the .cue; fuseiso mounts the .bin (it takes no cue sheet).
- *raw pread* for /bigfile reads the raw 2352-byte sectors that hold it from the BIN (the same image bytes
  imgfs has to read: 2352/2048 = 1.148× the file), in the same request size, and its MB/s is the file's
  bytes over that time: the raw reader's throughput in image bytes is 1.148× the number shown, and
  imgfs/raw is the ratio of the two times.
- The audio disc is one `TRACK 01 AUDIO` of pseudo-random 16-bit stereo PCM (a 1,048,573-byte block
  repeated). imgfs serves it as `Track 01.wav` (44-byte RIFF header + the PCM); the readers read the PCM
  (the WAV from byte 44; the BIN from byte 0), every byte of it. fuseiso and bchunk have no WAV view.
- *whole data disc*: imgfs and fuseiso `find MNT -type f -exec cat {} + > /dev/null` (every file, in
  128 KiB reads; not `tar cf /dev/null`, which GNU tar answers without reading the files); raw is
  `cat disc.bin > /dev/null`; bchunk is `bchunk disc.bin disc.cue OUT`, the track converted back to a
  2048-byte ISO, written to tmpfs (/dev/shm, RAM), so that no disk write is counted. imgfs/bchunk is a
  ratio of times: below 1 means imgfs read every file sooner than bchunk converted the disc.
- As in the other parts: a fresh mount per measurement; *warm* = both BINs in the page cache, *cold* =
  `sync; echo 3 > drop_caches` right before each reader; medians over the runs; ratios are medians of
  the ratios taken within each run. Mount-ready is the median over the warm mounts of the data disc."""


def render(meta: dict, medians: dict, ratios: dict, verdicts: dict, checks: dict, problems: list[str]) -> str:
    out = [HEADING, "", f"`{meta['command']}`, {meta['date']}: {meta['runs']} run(s); {meta['imgfs_version']}"
           f" = {meta['imgfs']}, checkout at git {meta['git']}; fuseiso {meta['fuseiso_version']}; bchunk "
           f"{meta['bchunk_version']}; {meta['cpus']} vCPU, Linux {meta['kernel']}, load average "
           f"{meta['loadavg_at_start']:.1f} at the start, {meta.get('loadavg_at_end', 0):.1f} after the runs.", "",
           f"Data disc: `{meta['data_cue']}` + `.bin` ({meta['data_bin_mib']:,.0f} MiB), made from "
           f"`{meta['iso']}`: /bigfile of {meta['big_mib']} MiB ({meta['big_raw_bytes']:,} bytes of raw sectors "
           f"from byte {meta['big_raw_offset']:,}) + {meta['small_files']:,} small files. Audio disc: "
           f"`{meta['audio_cue']}` + `.bin`: {meta['pcm_bytes']:,} bytes of PCM ({meta['audio_sectors']:,} "
           f"sectors, {meta['audio_sectors'] / 75 / 60:.1f} min).", "",
           *table(medians, ratios, verdicts), "", "### Method (optical discs)", "", NOTES, "",
           "### Checks (optical discs)", ""]
    for name, c in checks.items():
        if name.startswith("data via"):
            out.append(f"- {name}: /bigfile sha256 {'matches' if c['sha256_ok'] else '**differs from**'} the ISO's "
                       f"({checks['bigfile_sha256'][:16]}…); size {c['size']:,}; {c['entries']:,} entries.")
    if "fuseiso_detection" in checks:
        out.append(f"- fuseiso on the BIN says: \"{checks['fuseiso_detection']}\". It goes by where it finds the "
                   "volume descriptor (here at 16 × 2352 + 16) and then reads 2048 bytes at +16 of every 2352-byte "
                   "block; it does not look at the sync or mode bytes (a BIN with them zeroed, or with mode 2 in "
                   "the header, is still taken as MODE1).")
    if "wav" in checks:
        w = checks["wav"]
        header = "as expected" if w["header_ok"] else "**wrong**"
        out.append(f"- imgfs `Track 01.wav`: RIFF header {header}; PCM sha256 "
                   f"{'matches' if w['pcm_sha256_ok'] else '**differs from**'} the BIN's; size {w['size']:,}.")
    if "bchunk_output_is_the_iso" in checks:
        out.append(f"- bchunk's output {'is' if checks['bchunk_output_is_the_iso'] else '**is not**'} byte for byte "
                   "the ISO the BIN was made from (so the BIN is right).")
    out += [f"- PROBLEM: {p}" for p in problems] or ["- no problems seen"]
    missed = [f"{key}: {miss}" for key, (_, ok, miss) in verdicts.items() if not ok]
    out += ["", "### Targets missed (optical discs)", ""] + ([f"- {m}" for m in missed] or ["- none"])
    return "\n".join(out) + "\n"


"""The "DMG" section of the report: medians and ratios of the timed runs, the instrumented daemon's counts,
the library path, and the verdicts."""

from __future__ import annotations

from benchlib import copyall
from benchlib.dmgimage import CODECS
from benchlib.dmgsuite import ALL_READERS, DMG2IMG, HOT_REGION, IMGFS, SEVENZIP
from benchlib.report import RSS_BASE_MIB, fmt, ready_verdict, rss_verdict, summarize

HEADING = "## DMG (UDIF)"
PEER_TARGET = 1.5  # imgfs's sequential throughput against 7-Zip's on the same image
NAMES = {IMGFS: "imgfs", SEVENZIP: "7-Zip", DMG2IMG: "dmg2img"}
ROWS = (  # (kind, label, unit)
    ("seq", "/bigfile sequential, 128 KiB reads (dmg2img: the whole volume)", "MB/s"),
    ("seq_cores", "CPU busy during it (imgfs: the daemon's threads)", "cores"),
    ("seq_machine", "all vCPUs busy during it (the whole machine)", "%"),
    ("rss", "peak RSS after it (imgfs: the daemon's VmHWM)", "MiB"),
    ("random_hot", f"random 4 KiB reads within {HOT_REGION >> 20} MiB of /bigfile", "reads/s"),
    ("random_wide", "random 4 KiB reads over all of /bigfile", "reads/s"),
    ("rss_random", "daemon peak RSS after the 32 MiB random reads", "MiB"),
    ("rss_wide", "daemon peak RSS after the random reads over all of /bigfile", "MiB"),
    ("ready_s", "mount ready (mount command + first `ls`)", "s"),
)


def summarize_dmg(runs: list[dict]) -> tuple[dict, dict]:
    return summarize(runs, ALL_READERS)


def goals(medians: dict, ratios: dict, cache_mib: float) -> dict[str, tuple[str, bool, str]]:
    out = {}
    for codec in CODECS:
        key = f"{codec}.seq"
        if SEVENZIP in ratios.get(key, {}):
            r = ratios[key][SEVENZIP]
            out[key] = (f"≥ {PEER_TARGET}× 7-Zip", r >= PEER_TARGET,
                        "" if r >= PEER_TARGET else f"{r:.2f}× 7-Zip, needs {PEER_TARGET}×")
        for rss in ("rss", "rss_random", "rss_wide"):
            if f"{codec}.{rss}" in medians:
                out[f"{codec}.{rss}"] = rss_verdict(medians[f"{codec}.{rss}"][IMGFS], cache_mib)
        if f"{codec}.ready_s" in medians:
            out[f"{codec}.ready_s"] = ready_verdict(medians[f"{codec}.ready_s"][IMGFS])
    return out


def fmt_value(value, unit: str) -> str:  # noqa: ANN001
    if value is None:
        return "–"
    if unit == "cores":
        return f"{value:.2f}"
    if unit == "%":
        return f"{value:.0%}"
    if unit == "MB/s":
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    if unit == "reads/s":
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    return fmt(value, unit)


def main_table(medians: dict, ratios: dict, verdicts: dict) -> list[str]:
    lines = ["| image | measurement | unit | imgfs | 7-Zip | dmg2img | imgfs/7-Zip | imgfs/dmg2img | target "
             "| verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for codec, name in CODECS.items():
        for kind, label, unit in ROWS:
            key = f"{codec}.{kind}"
            if key not in medians:
                continue
            med, rat = medians[key], ratios.get(key, {})
            target, ok, miss = verdicts.get(key, ("", True, ""))
            verdict = "–" if not target else ("met" if ok else f"**MISSED** ({miss})")
            cells = [fmt_value(med.get(r), unit) for r in ALL_READERS]
            if kind == "seq" and DMG2IMG not in med:
                cells[2] = "cannot"
            ratio_cells = [f"{rat[ref]:.2f}×" if ref in rat and kind == "seq" else "–" for ref in (SEVENZIP, DMG2IMG)]
            row = [f"{name} ({codec})", label, unit, *cells, *ratio_cells, target or "–", verdict]
            lines.append(f"| {' | '.join(row)} |")
    return lines


def probe_table(probe: dict) -> list[str]:
    lines = ["| image | workload | result | FUSE READs (usual size) | BlockCache hit rate (hits / misses) "
             "| chunk ready when a READ asked | READ waited for a decode under way | READ decoded it itself "
             "| chunks touched | decodes (repeated) | decoded by the read-ahead workers | decodes under way, mean "
             "| daemon CPU s (of which decoding) | peak RSS MiB (threads) |", "|" + "---|" * 14]
    workloads = {"seq": "sequential", "random_hot": f"random, {HOT_REGION >> 20} MiB", "random_wide": "random, all",
                 "seq_arenas": "sequential, `MALLOC_ARENA_MAX=2`",
                 "random_wide_arenas": "random, all, `MALLOC_ARENA_MAX=2`"}
    for codec, name in CODECS.items():
        for key, label in workloads.items():
            p = probe.get(f"{codec}.{key}")
            if p is None:
                continue
            c = p["cache"]
            gets = max(1, p["chunk_gets"])
            size = p["fuse_read_size"]
            size_text = f"{size >> 10} KiB" if size < (1 << 20) else f"{size >> 20} MiB"
            row = [name, label, f"{fmt_value(p['value'], p['unit'])} {p['unit']}",
                   f"{p['fuse_reads']:,} ({size_text})",
                   f"{p['cache_hit_rate']:.1%} ({c['hits']:,} / {c['misses']:,})",
                   f"{p['chunk_gets_ready'] / gets:.1%} of {p['chunk_gets']:,}",
                   f"{p['chunk_gets_waited'] / gets:.1%} ({p['wait_s']:.2f} s)",
                   f"{p['chunk_gets_decoded'] / gets:.1%} ({p['own_decode_s']:.2f} s)",
                   f"{p['chunks_touched']:,}", f"{p['decodes']:,} ({p['repeat_decodes']:,})",
                   f"{p['decodes_by_workers']:,}", f"{p['decodes_in_flight_avg']:.2f}",
                   f"{p['daemon_cpu_s']:.2f} ({p['decode_cpu_s']:.2f})", f"{p['rss_mib']:.1f} ({p['threads']})"]
            lines.append(f"| {' | '.join(row)} |")
    return lines


def library_table(library: dict, medians: dict) -> list[str]:
    lines = ["| image | codec alone, 1 thread | codec alone, 2 threads | library read, no read-ahead "
             "| library read, read-ahead | imgfs mount (timed runs) | mount / library read-ahead "
             "| mount / 2-thread codec | 7-Zip |", "|" + "---|" * 9]
    for codec, name in CODECS.items():
        lib = library.get(codec)
        if lib is None:
            continue
        mount = medians.get(f"{codec}.seq", {}).get(IMGFS)
        seven = medians.get(f"{codec}.seq", {}).get(SEVENZIP)
        cells = [f"{lib['codec_1t']['mb_s']:,.0f} MB/s ({lib['codec_1t']['cores']:.2f} cores)",
                 f"{lib['codec_2t']['mb_s']:,.0f} MB/s ({lib['codec_2t']['cores']:.2f} cores)",
                 f"{lib['no_read_ahead']['mb_s']:,.0f} MB/s ({lib['no_read_ahead']['cores']:.2f} cores)",
                 f"{lib['read_ahead']['mb_s']:,.0f} MB/s ({lib['read_ahead']['cores']:.2f} cores)",
                 f"{mount:,.0f} MB/s" if mount else "–",
                 f"{mount / lib['read_ahead']['mb_s']:.2f}×" if mount else "–",
                 f"{mount / lib['codec_2t']['mb_s']:.2f}×" if mount else "–",
                 f"{seven:,.0f} MB/s" if seven else "–"]
        lines.append(f"| {name} ({codec}) | {' | '.join(cells)} |")
    return lines


NOTES = """\
- The volume is HFS+ made by `xorriso -as mkisofs -hfsplus` (a real third-party HFS+ writer): its
  `Apple_HFS` partition cut out of the ISO/APM/HFS+ hybrid xorriso writes, so that the DMG holds a bare
  HFS+ volume (one block table, `whole disk (Apple_HFS : 0)`, as `hdiutil create -layout NONE` makes):
  imgfs mounts the HFS+ volume itself, 7-Zip lists and extracts `VOLUME/bigfile` from it. The DMGs are
  written by tests/udifwriter.py in 1 MiB chunks (2048 sectors, as hdiutil does): zlib level 6 (UDZO),
  LZFSE (ULFO), bzip2 -9 (UDBZ). /bigfile is text-like and binary data, the same for every codec, with
  no all-zero chunk (those are holes that cost nothing).
- *imgfs*: a fresh mount per measurement; /bigfile read in 128 KiB `os.pread` calls by one Python reader,
  as in the other parts; the kernel sends 1 MiB READs (imgfs raises the mount's readahead as root).
  MB/s = /bigfile's bytes over the read (the mount not counted: see *mount ready*). *CPU busy* = the
  daemon's user + system time over the read / the read's wall time (2.0 = both vCPUs all the time; the
  reading process's own CPU is not in it). *All vCPUs busy* = the machine's non-idle time over the read
  (/proc/stat): whatever else ran counts too.
- *7-Zip*: `7zz e -so X.dmg VOLUME/bigfile > /dev/null`, the whole command timed (start-up and opening the
  image included: a few ms). *dmg2img*: `dmg2img -s X.dmg /dev/null`, its MB/s over the whole volume it
  converts (/bigfile plus a few hundred KB of HFS+ metadata). CPU and peak RSS from their rusage.
  "cannot": this dmg2img converts the image into an empty file (it has no LZFSE), so it is not timed.
- All images are in the page cache (warm) for every reader: decoding sets the pace, not the disk.
- Random reads: 4 KiB `os.pread` calls at aligned offsets, the same ones in every run, within 32 MiB from
  the middle of /bigfile (fits the 64 MiB cache) and over the whole file (many times the cache); the
  daemon's peak RSS is read after each (a fresh mount for each).
- Values are medians over the runs; ratios are medians of the ratios taken within each run.
- *Instrumented daemon*: imgfs has no way to report the cache of a running mount, so after the timed
  runs every workload runs once more on `bench/benchlib/dmgprobe.py`, which runs the same `imgfs.cli.main`
  with in-memory wrappers around the FUSE read, `UdifDisk.chunk` and `UdifDisk.decode`, and writes the
  events and `BlockCache.stats()` out when the mount ends. Its counts cover the workload only (not the
  mount's own reads of the HFS+ metadata), except the BlockCache hit rate, which is the whole mount's as
  `stats()` gives it; BlockCache counts a request that waits for a decode already under way as a hit,
  and the read-ahead workers' own requests too, so *chunk ready when a READ asked* is the stricter rate.
  The `MALLOC_ARENA_MAX=2` rows are the same daemon with glibc's malloc arenas capped at 2 (an environment
  variable glibc reads; `mallopt(M_ARENA_MAX, 2)` does the same from inside), for the RSS.
- *Library path*: the same imgfs code without FUSE, in one process: the codec alone on the image's own
  chunks (one thread; two threads each decoding all of them: the machine's ceiling for parallel
  decoding; the best of three), and /bigfile through `open_image(...).tree.open()` in 1 MiB reads, with
  imgfs's read-ahead turned off and on.
- The instrumented daemon and the library path run once, minutes after the timed runs: this machine's
  speed per core wanders by 10-20 % over minutes (bzip2 most), so compare numbers within one table
  rather than across tables."""


def machine_text(medians: dict, codec: str) -> str:
    busy = medians.get(f"{codec}.seq_machine", {}).get(IMGFS)
    cores = medians.get(f"{codec}.seq_cores", {}).get(IMGFS)
    if busy is None or cores is None:
        return ""
    return (f" In the timed reads the two vCPUs were {busy:.0%} busy, {cores:.2f} cores of it the daemon: what is "
            "not decoding is the FUSE round trips, the copies into libfuse's buffers, Python around each READ and "
            "chunk, and the reading process.")


def cache_line(name: str, seq: dict, hot: dict | None, wide: dict | None) -> str:
    gets = max(1, seq["chunk_gets"])
    text = (f"- {name}: cache: the sequential read decoded {seq['decodes']:,} chunks for {seq['chunks_touched']:,} "
            f"touched ({seq['repeat_decodes']} decoded twice); of the FUSE READs' {seq['chunk_gets']:,} requests for a "
            f"chunk, {seq['chunk_gets_ready'] / gets:.0%} found it decoded, {seq['chunk_gets_waited'] / gets:.0%} "
            f"waited for a read-ahead decode under way, {seq['chunk_gets_decoded'] / gets:.0%} decoded it. "
            f"BlockCache's own hit rate, {seq['cache_hit_rate']:.0%}, cannot pass 2/3 here: a 1 MiB READ that is not "
            "aligned with the chunks asks for two of them, so each chunk gets two hits and its one miss (the decode).")
    if hot:
        text += (f" Random reads within {HOT_REGION >> 20} MiB: {hot['decodes']} decodes for {hot['chunks_touched']} "
                 f"chunks touched ({hot['repeat_decodes']} repeated; the extra ones are read-ahead past the stretch), "
                 f"hit rate {hot['cache_hit_rate']:.1%}.")
    if wide:
        text += (f" Over the whole file: {wide['decodes']} decodes for {wide['chunks_touched']} chunks touched "
                 f"({wide['repeat_decodes']} repeated: chunks evicted from the 64 MiB cache and touched again), "
                 f"hit rate {wide['cache_hit_rate']:.1%}.")
    return text


def where_time_goes(medians: dict, library: dict, probe: dict, cache_mib: float) -> list[str]:
    """Lines computed from the numbers: how far each mount is from the library path and the codec ceiling,
    what the 1.5x target asks of the codec, where the memory and the mount time go."""
    out = []
    for codec, name in CODECS.items():
        mount = medians.get(f"{codec}.seq", {}).get(IMGFS)
        seven = medians.get(f"{codec}.seq", {}).get(SEVENZIP)
        lib, p = library.get(codec), probe.get(f"{codec}.seq")
        if not mount or lib is None or p is None:
            continue
        two = lib["codec_2t"]["mb_s"]
        if seven:
            need = PEER_TARGET * seven
            reach = ("within" if need <= two else "**beyond**")
            out.append(f"- {name}: {PEER_TARGET}× 7-Zip ({seven:,.0f} MB/s on one core) asks for {need:,.0f} MB/s, "
                       f"{reach} what this codec does on two threads on this machine ({two:,.0f} MB/s, "
                       f"{two / lib['codec_1t']['mb_s']:.2f}× one thread); 7-Zip, on one core, extracts at "
                       f"{seven / lib['codec_1t']['mb_s']:.2f}× the speed of this codec on one thread.")
        span = max(p["span_s"], 1e-9)
        levels = {int(k): v / span for k, v in p["decode_level_s"].items()}
        one, two = lib["codec_1t"]["mb_s"], lib["codec_2t"]["mb_s"]
        out.append(
            f"- {name}: the mount streams at {mount:,.0f} MB/s, {mount / one:.2f}× the codec on one thread and "
            f"{mount / two:.2f}× its two-thread ceiling ({two:,.0f} MB/s); the library path with read-ahead reaches "
            f"{lib['read_ahead']['mb_s']:,.0f} MB/s. In the instrumented sequential read, decodes were under way "
            f"{p['decodes_in_flight_avg']:.2f} at a time on average (two at once {levels.get(2, 0):.0%} of the time, "
            f"none {levels.get(0, 0):.0%}); the FUSE threads waited "
            f"{p['wait_s']:.2f} s for decodes under way and decoded {p['chunk_gets_decoded']:,} chunk(s) themselves; "
            f"the daemon used {p['daemon_cpu_s']:.2f} s of CPU, {p['decode_cpu_s']:.2f} s of it decoding "
            f"({p['decode_cpu_s'] / max(p['decode_wall_s'], 1e-9):.0%} of the decodes' wall time: the rest is waiting "
            f"for a CPU or the GIL)." + machine_text(medians, codec))
        out.append(cache_line(name, p, probe.get(f"{codec}.random_hot"), probe.get(f"{codec}.random_wide")))
        arenas, wide = probe.get(f"{codec}.seq_arenas"), probe.get(f"{codec}.random_wide")
        wide_arenas = probe.get(f"{codec}.random_wide_arenas")
        if arenas and wide and wide_arenas:
            text = (f"- {name}: memory: the daemon's peak RSS was {p['rss_mib']:.0f} MiB after the sequential read "
                    f"({p['threads']} threads) and {wide['rss_mib']:.0f} MiB after the random reads over the whole "
                    f"file, for a {cache_mib:.0f} MiB cache; with `MALLOC_ARENA_MAX=2` in its environment "
                    f"{arenas['rss_mib']:.0f} and {wide_arenas['rss_mib']:.0f} MiB ({arenas['value']:,.0f} MB/s "
                    f"against {p['value']:,.0f}, {wide_arenas['value']:,.1f} reads/s against {wide['value']:,.1f}).")
            if min(p["rss_mib"] - arenas["rss_mib"], wide["rss_mib"] - wide_arenas["rss_mib"]) > 8:
                text += (" Each thread that decodes gets its own malloc arena, and with a trim threshold of 64 MiB "
                         "each keeps the freed chunks and decompressor state: `mallopt(M_ARENA_MAX, 2)` is worth it.")
            else:
                text += " No clear difference: this imgfs caps glibc's malloc arenas itself."
            out.append(text)
        workers = p["mount_decodes_by_workers"]
        ahead = (f", {workers} of them by the read-ahead workers, which the mount command waits for before it forks"
                 if workers else ", none ahead (by the read-ahead workers)")
        out.append(f"- {name}: mounting decoded {p['mount_decodes']} chunk(s) ({p['mount_decode_s'] * 1000:.0f} ms of "
                   f"decoding){ahead}; the instrumented mount was ready in {p['ready_s']:.3f} s.")
    return out


def noise_line(runs: list[dict]) -> str:
    """7-Zip runs on one vCPU: the machine's busy share during its reads, 50 % on a quiet 2-vCPU machine,
    tells how much else ran during each run."""
    cells = []
    for index, run in enumerate(runs, 1):
        seen = [run[f"{codec}.seq_machine"][SEVENZIP] for codec in CODECS
                if SEVENZIP in run.get(f"{codec}.seq_machine", {})]
        if seen:
            cells.append(f"run {index}: " + "/".join(f"{v:.0%}" for v in seen))
    if not cells:
        return ""
    return ("Other load, per run: all vCPUs busy during 7-Zip's UDZO/ULFO/UDBZ reads (7-Zip uses one vCPU: "
            "about 50 % on a quiet machine; more means something else ran): " + "; ".join(cells) + ".")


def render(meta: dict, medians: dict, ratios: dict, verdicts: dict, probe: dict, library: dict, checks: dict,
           problems: list[str], runs: list[dict]) -> str:
    sizes = ", ".join(f"{CODECS[c]} {mib:,.0f} MiB" for c, mib in meta["dmg_mib"].items())
    out = [HEADING, "",
           f"`{meta['command']}`, {meta['date']}: {meta['runs']} run(s); {meta['imgfs_version']} = {meta['imgfs']}, "
           f"checkout at git {meta['git']}; {meta['sevenzip_version']}; dmg2img {meta['dmg2img_version']}; "
           f"{meta['cpus']} vCPU, Linux {meta['kernel']}, load average {meta['loadavg_at_start']:.1f} at the start, "
           f"{meta.get('loadavg_at_end', 0):.1f} after the runs; CPU steal during the runs "
           f"{meta.get('steal_pct', 0):.1f} %; imgfs cache {meta['cache_mib']} MiB (the default).", "",
           f"Volume: `{meta['hfs']}` (HFS+, {meta['hfs_mib']:,.0f} MiB) with /bigfile of {meta['big_mib']} MiB and "
           f"{meta['small_files']} small files; DMGs: {sizes} (`{meta['dmg_stem']}-*.dmg`); "
           f"{meta['hot_reads']:,} random reads within {HOT_REGION >> 20} MiB, {meta['wide_reads']:,} over the whole "
           "file.", "", *main_table(medians, ratios, verdicts), "", noise_line(runs), "",
           "### Copying everything off the UDZO image (into tmpfs)", "",
           *copyall.table(medians, ratios, "7zz x", 2.0, prefix="zlib."), "",
           "### Cache and decoding (instrumented daemon, one mount per workload, one run)", "", *probe_table(probe), "",
           "### The library path (no FUSE) against the mount", "", *library_table(library, medians), "",
           "### Where the time goes (DMG)", "", *where_time_goes(medians, library, probe, meta["cache_mib"]), "",
           "### Method (DMG)", "", NOTES, "", "### Checks (DMG)", ""]
    for name, c in checks.items():
        if name.endswith("via imgfs"):
            out.append(f"- {name}: /bigfile sha256 {'matches' if c['sha256_ok'] else '**differs from**'} the file "
                       f"written ({checks['bigfile_sha256'][:16]}…); size {c['size']:,}; {c['entries']} entries.")
        elif name.endswith("via 7zz"):
            out.append(f"- {name}: the extracted /bigfile {'matches' if c['sha256_ok'] else '**differs**'}; "
                       f"{c['size']:,} bytes.")
        elif name.endswith("via dmg2img"):
            what = "is the volume byte for byte" if c["ok"] else f"is **not** the volume ({c['size']:,} bytes)"
            out.append(f"- {name}: its conversion {what}" + (f"; it said: \"{c['said']}\"" if c["said"] else "") + ".")
    out += [f"- PROBLEM: {p}" for p in problems] or ["- no problems seen"]
    missed = [f"{key}: {miss}" for key, (_, ok, miss) in verdicts.items() if not ok]
    out += ["", "### Targets missed (DMG)", ""] + ([f"- {m}" for m in missed] or ["- none"])
    out += ["", f"RSS target: ≤ {RSS_BASE_MIB} MiB + the cache."]
    return "\n".join(out) + "\n"

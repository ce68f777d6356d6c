"""Fuzz one target with atheris: ``python fuzz/run.py TARGET [libFuzzer options] [CORPUS_DIR ...]``.

The imgfs package is instrumented for coverage (every module the registry names is imported under
instrumentation, since openers are otherwise loaded on first use). Address space is limited to what the
process uses after start-up plus ``IMGFS_FUZZ_MEMORY`` (1 GiB by default), so that an allocation a hostile
size field asks for fails as ``MemoryError``: a finding, like any exception that is not an ``ImageError``.
``-timeout=5`` (set unless given) makes an input that takes over 5 seconds a finding too.

``--replay FILE ...`` runs the given inputs once each, without atheris (the reproducers' tests do this).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MEMORY_HEADROOM = int(os.environ.get("IMGFS_FUZZ_MEMORY", 1 << 30))


def _import_everything() -> None:
    from imgfs import registry

    names = [f.opener for f in registry.FORMATS if f.opener] + [s.opener for s in registry.SOURCES]
    names += [s.claims for s in registry.SOURCES] + list(registry.SHEETS)
    for dotted in names:
        importlib.import_module(dotted.partition(":")[0])
    for module in ("imgfs.image", "imgfs.tree", "imgfs.filesystems.names", "imgfs.codecs.kdf"):
        importlib.import_module(module)


def _limit_memory() -> None:
    """What the process maps now, plus the headroom: a bigger allocation fails."""
    with open("/proc/self/status") as status:
        vm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    limit = vm_kb * 1024 + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _one_arena() -> None:
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)  # M_ARENA_MAX: threads share the heap (address space is limited)
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    name, rest = argv[1], argv[2:]
    replay = rest[:1] == ["--replay"]
    if replay:
        from targets import TARGETS, new_workdir, run, setup
    else:
        import atheris

        with atheris.instrument_imports(include=["imgfs"]):
            _import_everything()
            from targets import TARGETS, new_workdir, run, setup
    target = TARGETS.get(name)
    if target is None:
        print(f"unknown target {name}; targets: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    setup()
    workdir = new_workdir()
    _one_arena()
    _limit_memory()
    if replay:
        for path in rest[1:]:
            with open(path, "rb") as handle:
                run(target, handle.read(), workdir)
            print(f"{path}: ok", flush=True)
        return 0
    import encoding

    def test_one(data: bytes) -> None:
        run(target, data, workdir)

    mutator = {"sparse": encoding.mutate_sparse, "files": encoding.mutate_files}.get(target.encoding)
    options = [f"-max_len={target.max_len}"] + ([] if any(a.startswith("-timeout=") for a in rest) else ["-timeout=5"])
    args = [argv[0], *options, *rest]
    if mutator is None:
        atheris.Setup(args, test_one)
    else:
        atheris.Setup(args, test_one, custom_mutator=lambda data, size, seed: mutator(data, size, seed, atheris.Mutate))
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

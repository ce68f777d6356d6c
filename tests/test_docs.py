"""What documents imgfs for its user: ``--help`` (every option and namespace), imgfs(1), the bash and zsh
completions (driven as a shell drives them), the mount options ``debug`` and ``default_permissions``, and
where a background mount logs when there is no syslog."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import IMGFS, is_mounted, read_errno, run_imgfs, unmount
from isotools import find_record, patch_record, pseudo_random, write_file, xorriso

from imgfs.cli.main import COMMANDS
from imgfs.cli.mount import _log_handler
from imgfs.options import OPTIONS
from imgfs.registry import NAMESPACES

PROJECT = Path(__file__).resolve().parents[1]
OPTION_NAMES = [option.name for option in OPTIONS]


def generated(kind: str) -> str:
    return subprocess.run([sys.executable, "-m", "imgfs.cli.docs", kind], capture_output=True, text=True,
                          check=True).stdout


def test_help_lists_every_command_option_and_namespace():
    text = run_imgfs("--help", check=True).stdout
    for name in COMMANDS:
        assert f"imgfs {name} " in text and re.search(rf"^  {name} +\S", text, re.M), name
    for name in (*OPTION_NAMES, "allow_root", "auto_unmount", "default_permissions", "debug", "x-*"):
        assert re.search(rf"^  {re.escape(name)}\b", text, re.M) or f" {name}" in text, name
    assert ", ".join(NAMESPACES) in text.replace("\n", " ").replace("                       ", "")
    assert "$XDG_STATE_HOME/imgfs/imgfs.log" in text


def test_the_man_page_renders_and_names_everything(tmp_path):
    page = tmp_path / "imgfs.1"
    page.write_text(generated("man"))
    warnings = subprocess.run(["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True)
    assert warnings.returncode == 0 and warnings.stderr == ""
    shown = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True,
                           env={**os.environ, "MANWIDTH": "100", "MAN_KEEP_FORMATTING": ""}).stdout
    shown = re.sub(r".\x08", "", shown)  # overstriking (bold) as man writes it to a pipe
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "MOUNT OPTIONS", "ENVIRONMENT", "EXIT STATUS"):
        assert f"\n{heading}\n" in shown, heading
    for name in COMMANDS:
        assert f"imgfs {name}" in shown, name
    for name in (*OPTION_NAMES, *NAMESPACES):
        assert name in shown, name


def test_make_install_docs_puts_them_where_man_and_the_shells_look(tmp_path):
    done = subprocess.run(["make", "-C", str(PROJECT), "--no-print-directory", "install-docs", f"PREFIX={tmp_path}",
                           "SUDO=", f"BIN={Path(sys.executable).parent}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    page = subprocess.run(["man", "-M", str(tmp_path / "share" / "man"), "-P", "cat", "imgfs"], capture_output=True,
                          text=True, env={**os.environ, "MANWIDTH": "100"})
    assert "imgfs, mount.imgfs - mount disk images read-only as folders" in page.stdout
    assert (tmp_path / "share/bash-completion/completions/imgfs").read_text() == generated("bash")
    assert (tmp_path / "share/zsh/site-functions/_imgfs").read_text() == generated("zsh")


# -- completion, as the shells ask for it ---------------------------------------------------------------------


def bash_complete(line: str, tmp_path: Path) -> list[str]:
    """What bash offers at the end of ``line`` (the function bash-completion would call on Tab)."""
    script = tmp_path / "imgfs.bash"
    script.write_text(generated("bash"))
    probe = ('compopt() { :; }; source "$1"; COMP_LINE=$2; COMP_POINT=${#COMP_LINE}; _imgfs; '
             'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", probe, "bash", str(script), line], capture_output=True, text=True,
                          cwd=tmp_path, check=True)
    return [word for word in done.stdout.splitlines() if word]


@pytest.mark.parametrize(("line", "offered"), [
    ("imgfs in", ["info"]),
    ("imgfs ex", ["extract"]),
    ("imgfs disc.iso /mnt -o allow_o", ["allow_other"]),
    ("imgfs disc.iso /mnt -o ro,name", ["ro,namespace="]),
    ("imgfs disc.iso /mnt -o namespace=", ["auto", *NAMESPACES]),
    ("imgfs disc.iso /mnt -o uid=1000,namespace=hf",  # bash splits at '=': the rest of the word
     [ns for ns in NAMESPACES if ns.startswith("hf")]),
    ("imgfs disc.iso /mnt -oauto_", ["-oauto_unmount"]),
    ("imgfs info --j", ["--json"]),
])
def test_bash_completion(tmp_path, line, offered):
    assert bash_complete(line, tmp_path) == offered


def test_bash_completion_offers_every_option(tmp_path):
    offered = bash_complete("imgfs disc.iso /mnt -o ", tmp_path)
    assert offered == [option.usage.split("=")[0] + ("=" if option.value else "") for option in OPTIONS]


ZSH_SETUP = """
PS1='' PROMPT='' RPS1=''
fpath=({functions} $fpath)
autoload -Uz compinit && compinit -u -D
bindkey '^I' complete-word
zstyle ':completion:*' insert-tab false
compadd() {{  # every match offered, printed instead of shown
  if [[ ${{@[1,(i)(-|--)]}} == *-(O|A|D)\\ * ]]; then builtin compadd "$@"; return; fi
  local -a hits
  builtin compadd -A hits "$@"
  (( $#hits )) && print -rl -- "${{hits[@]/#/MATCH:}}"
}}
comppostfuncs=(exit)
"""
ZSH_DRIVER = """
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "source $1"
zpty -w -n z "$2"$'\\t'
local out all
while zpty -r z out; do all+=$out; done
print -r -- $all
"""


def zsh_complete(line: str, tmp_path: Path) -> list[str]:
    """What zsh offers on Tab at the end of ``line``: an interactive zsh in a pseudo-terminal (zpty)."""
    functions = tmp_path / "functions"
    functions.mkdir(exist_ok=True)
    (functions / "_imgfs").write_text(generated("zsh"))
    (tmp_path / "setup.zsh").write_text(ZSH_SETUP.format(functions=functions))
    (tmp_path / "driver.zsh").write_text(ZSH_DRIVER)
    done = subprocess.run(["zsh", "-f", str(tmp_path / "driver.zsh"), str(tmp_path / "setup.zsh"), line],
                          capture_output=True, cwd=tmp_path, timeout=60)
    return re.findall(r"MATCH:([^\r\n]*)", done.stdout.decode(errors="replace"))


@pytest.mark.parametrize(("line", "offered"), [
    ("imgfs ex", ["extract"]),
    ("imgfs disc.iso /mnt -o names", ["namespace"]),
    ("imgfs disc.iso /mnt -o ro,namespace=", ["auto", *NAMESPACES]),
    ("imgfs info --js", ["--json"]),
])
def test_zsh_completion(tmp_path, line, offered):
    assert zsh_complete(line, tmp_path) == offered


def test_zsh_completion_offers_every_option(tmp_path):
    assert sorted(zsh_complete("imgfs disc.iso /mnt -o ", tmp_path)) == sorted(OPTION_NAMES)


# -- mount options: debug, default_permissions ----------------------------------------------------------------


@pytest.fixture(scope="module")
def iso(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("docs")
    write_file(work / "src" / "open.txt", b"everyone\n", 0o644)
    write_file(work / "src" / "victim.bin", pseudo_random(50_000, 3))
    return xorriso(work / "image.iso", work / "src")


def test_o_debug_stays_in_the_foreground_and_prints_requests(iso, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen([IMGFS, str(iso), str(mnt), "-o", "debug"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if is_mounted(mnt):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "returned instead of serving in the foreground"
        assert (mnt / "open.txt").read_bytes() == b"everyone\n"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        unmount(mnt)
    assert b"open.txt" in err and b"DEBUG" in err


def test_o_default_permissions_is_accepted(iso, tmp_path):
    """A mount option, not an unknown one (the FUSE adapter applies it; its tests check the modes)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run_imgfs(str(iso), str(mnt), "-o", "default_permissions", check=True)
    try:
        assert (mnt / "open.txt").read_bytes() == b"everyone\n"
    finally:
        unmount(mnt)


# -- logs ------------------------------------------------------------------------------------------------------


def test_without_syslog_the_log_goes_under_xdg_state_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    handler = _log_handler(None, to_stderr=False, syslog=str(tmp_path / "no-such-socket"))
    try:
        assert isinstance(handler, logging.FileHandler)
        assert handler.baseFilename == str(tmp_path / "state" / "imgfs" / "imgfs.log")
    finally:
        handler.close()
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    handler = _log_handler(None, to_stderr=False, syslog=str(tmp_path / "no-such-socket"))
    handler.close()
    assert isinstance(handler, logging.FileHandler)
    assert handler.baseFilename == str(tmp_path / "home" / ".local" / "state" / "imgfs" / "imgfs.log")
    (tmp_path / "a-file").write_text("")  # a user whose home cannot be written in: no log, the mount goes on
    monkeypatch.setenv("HOME", str(tmp_path / "a-file" / "home"))
    assert type(_log_handler(None, to_stderr=False, syslog="/no-such-socket")) is logging.NullHandler


@pytest.mark.skipif(os.path.exists("/dev/log"), reason="this machine has syslog: the log goes there")
def test_a_background_mount_logs_its_errors_to_the_state_file(iso, tmp_path):
    damaged = tmp_path / "damaged.iso"
    data = iso.read_bytes()
    damaged.write_bytes(data)
    patch_record(damaged, find_record(data, b"VICTIM.BIN;1"), extent=len(data) // 2048 - 5)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    run_imgfs(str(damaged), str(mnt), check=True, env=env)
    try:
        assert read_errno(mnt / "victim.bin") == 5  # EIO
    finally:
        unmount(mnt)
    log = (tmp_path / "state" / "imgfs" / "imgfs.log").read_text()
    assert "victim.bin" in log and "past the end" in log

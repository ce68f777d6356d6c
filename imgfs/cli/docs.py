"""imgfs(1) and the bash and zsh completions, made from the tables ``imgfs --help`` is made from (the commands
in ``imgfs.cli.main``, the ``-o`` options in ``imgfs.options``, the namespaces in the registry), so that they
never drift apart. ``make install`` writes them: ``python -m imgfs.cli.docs man|bash|zsh``.
"""

from __future__ import annotations

import sys

from imgfs import __version__
from imgfs.cli.main import COMMANDS
from imgfs.options import IGNORED, OPTIONS
from imgfs.registry import FORMATS, NAMESPACES

FLAGS = (("-f", "stay in the foreground, logging to stderr"),
         ("-d", "debug output: every FUSE request (implies -f; as -o debug)"),
         ("-s", "serve FUSE from one thread"),
         ("-o OPTIONS", "mount options, comma-separated (see MOUNT OPTIONS)"),
         ("-V, --version", "print the version"),
         ("-h, --help", "print the usage; imgfs COMMAND -h prints a command's own"))
DETAILS = {
    "open": "Mounts IMAGE in a new folder under /run/media/$USER or /media/$USER when the user may write "
            "there (root may), else under ~/Disk images, named after the volume's label; prints the folder "
            "and, in a graphical session, opens it in the file manager (--no-browse: not). The file manager "
            "shows the mount in its sidebar; its Unmount or Eject button (gio mount -u) unmounts it, the "
            "daemon ends and the folder is removed. An image that is mounted already is shown where it is.",
    "close": "Unmounts a mount point, or every mount of an image; the daemon ends. A dead mount (its daemon "
             "killed) is cleared.",
    "list": "Lists the imgfs mounts: image, mount point, and the image's layers, outermost first.",
    "info": "Prints each layer of the image (container, partition map, filesystem) and its details as "
            "aligned tables, with a partition layout bar and an optical disc's track table; --json keeps every "
            "detail. When no format is recognised, -v lists what was tried and why it did not match.",
    "ls": "Lists a folder of the image without mounting it; -l with modes, owners, sizes and times, -R "
          "recursively.",
    "cat": "Writes a file of the image to standard output.",
    "extract": "Copies the whole image, or PATH (a file or a folder, under its own name), into DEST (made if "
               "missing), keeping modes, times, symbolic links, hard links, device files, owners (as root) and "
               "extended attributes where DEST keeps them. Names that would lead out of DEST are refused. "
               "-f replaces files that exist in DEST.",
    "verify": "Checks every checksum the image carries: EDC/ECC of raw CD sectors, a DMG's CRC32s.",
    "umount": "Unmounts, as close.",
}


def _roff(text: str) -> str:
    return text.replace("\\", "\\e").replace("-", "\\-").replace("'", "\\(aq")


def man_page() -> str:
    """imgfs(1) in man(7) macros."""
    lines = [f'.TH IMGFS 1 "" "imgfs {__version__}" "User Commands"', ".SH NAME",
             "imgfs, mount.imgfs \\- mount disk images read\\-only as folders, through FUSE", ".SH SYNOPSIS",
             ".B imgfs", ".I IMAGE MOUNTPOINT", "[\\fB\\-o\\fR \\fIOPTIONS\\fR] [\\fB\\-f\\fR] [\\fB\\-d\\fR] "
             "[\\fB\\-s\\fR]", ".br"]
    for name, command in COMMANDS.items():
        lines += [f".B imgfs {name}", _roff(command.usage), ".br"]
    lines += [".B mount", "\\-t imgfs", ".I IMAGE MOUNTPOINT", "[\\fB\\-o\\fR \\fIOPTIONS\\fR]",
              ".SH DESCRIPTION",
              _roff("imgfs mounts a disk image read-only as an ordinary folder. The command returns once the "
                    "mount is ready; a daemon serves it until it is unmounted (imgfs close, fusermount3 -u, umount) "
                    "or sent SIGTERM or SIGINT. Every failure is one line on stderr. Formats are detected by "
                    "content, layer inside layer (a container, a partition map, a filesystem); imgfs reads:"),
              *_formats(),
              ".SH OPTIONS"]
    for flag, text in FLAGS:
        lines += [".TP", f".B {_roff(flag)}", _roff(text)]
    lines += [".SH COMMANDS"]
    for name, command in COMMANDS.items():
        lines += [".TP", f".B imgfs {name} {_roff(command.usage)}", _roff(DETAILS.get(name, command.summary))]
    lines += [".SH MOUNT OPTIONS", _roff("Comma-separated, after -o; imgfs info, ls, cat, extract and verify take "
                                         "them too.")]
    for option in OPTIONS:
        lines += [".TP", f".B {_roff(option.usage)}", _roff(option.help)]
    lines += [".TP", ".B " + _roff(", ".join(sorted(IGNORED)) + ", x-*"),
              _roff("accepted and ignored: the mount is always read-only.")]
    lines += [".SH ENVIRONMENT", ".TP", ".B IMGFS_PASSPHRASE",
              _roff("the passphrase of an encrypted image, when passfile= is not given."), ".TP",
              ".B XDG_STATE_HOME", _roff("where a background mount logs when there is no syslog (/dev/log): "
                                         "$XDG_STATE_HOME/imgfs/imgfs.log, by default "
                                         "~/.local/state/imgfs/imgfs.log."),
              ".SH EXIT STATUS", _roff("0 on success; 1 when the image or the mount point cannot be used (one line "
                                       "on stderr says why); 2 for a usage error; 70 for an internal error."),
              ".SH EXAMPLES", ".nf", _roff("imgfs debian.iso ~/mnt && ls ~/mnt && imgfs close ~/mnt"),
              _roff("imgfs open installer.dmg"), _roff("imgfs info 2024-raspios.img"),
              _roff("imgfs extract disc.cue /docs ~/out"),
              _roff("mount -t imgfs -o ro,allow_other /srv/images/debian.iso /mnt/debian"), ".fi",
              ".SH SEE ALSO", "mount(8), fstab(5), fusermount3(1), gio(1)"]
    return "\n".join(lines) + "\n"


def _formats() -> list[str]:
    """The formats imgfs reads, as the registry describes them, one per line."""
    lines = [".PD 0"]  # one line each, no space between
    for fmt in FORMATS:
        if fmt.opener is not None:
            lines += [".IP \\(bu 2", _roff(fmt.description)]
    return lines + [".PD", ".PP"]


def _words(items: list[str]) -> str:
    return " ".join(items)


def bash_completion() -> str:
    """``complete -F _imgfs imgfs``: commands, -o option names (a comma-separated list, item by item),
    namespace= values, images, folders, and imgfs mount points for close and umount."""
    options = _words([option.usage.split("=")[0] + ("=" if option.value else "") for option in OPTIONS])
    return f"""# bash completion for imgfs (made by `python -m imgfs.cli.docs bash`)
_imgfs_mounts()
{{
    local source target type rest
    while read -r source target type rest; do
        [[ $type == fuse.imgfs ]] && printf '%b\\n' "$target"
    done < /proc/mounts
}}

_imgfs()
{{
    local line=${{COMP_LINE:0:COMP_POINT}}
    local cur=${{line##*[[:space:]]}}  # the whole word, '=' and ':' included
    local -a words=($line)
    [[ -z $cur ]] && words+=("")
    local prev=${{words[${{#words[@]}}-2]}} command=${{words[1]}}
    local -a found=()
    if [[ $prev == -o || $cur == -o?* ]]; then
        local given=${{cur#-o}} head="" item
        [[ $given == *,* ]] && head=${{given%,*}},
        item=${{given##*,}}
        [[ $cur == -o?* ]] && head="-o$head"
        if [[ $item == namespace=* ]]; then
            found=($(compgen -P "${{head}}namespace=" -W "auto {_words(list(NAMESPACES))}" -- "${{item#namespace=}}"))
        else
            found=($(compgen -P "$head" -W "{options}" -- "$item"))
        fi
        [[ ${{#found[@]}} -eq 1 && ${{found[0]}} == *= ]] && compopt -o nospace
    elif [[ $cur == -* ]]; then
        case $command in
            open) found=($(compgen -W "--no-browse -o -h" -- "$cur")) ;;
            info) found=($(compgen -W "--json -v --verbose -o -h" -- "$cur")) ;;
            ls) found=($(compgen -W "-l -R -o -h" -- "$cur")) ;;
            extract) found=($(compgen -W "-f --force -o -h" -- "$cur")) ;;
            list) found=($(compgen -W "--json -h" -- "$cur")) ;;
            *) found=($(compgen -W "-o -f -d -s -V --version -h --help" -- "$cur")) ;;
        esac
    elif [[ ${{#words[@]}} -eq 2 ]]; then
        found=($(compgen -W "{_words(list(COMMANDS))}" -- "$cur") $(compgen -f -- "$cur"))
    else
        case $command in
            close|umount) found=($(compgen -W "$(_imgfs_mounts)" -- "$cur") $(compgen -f -- "$cur")) ;;
            list) ;;
            *) found=($(compgen -f -- "$cur")) ;;
        esac
    fi
    # bash splits words at '=' and ':' too: give back only what follows the last of them in the word
    local split=${{cur%[=:]*}}
    if [[ $split != "$cur" ]]; then
        found=("${{found[@]#"$split"?}}")
    fi
    COMPREPLY=("${{found[@]}}")
}}
complete -o filenames -F _imgfs imgfs
"""


def zsh_completion() -> str:
    """``#compdef imgfs``: commands with their summaries, -o options with their help, namespace= values."""
    values = []
    for option in OPTIONS:
        text = option.help.replace("[", "(").replace("]", ")").replace(":", " -")
        if option.name == "namespace":
            values.append(_zq(f"namespace[{text}]:namespace:(auto {_words(list(NAMESPACES))})"))
        elif option.value:
            action = "_files" if option.value == "PATH" else ""
            values.append(_zq(f"{option.name}[{text}]:{option.value.lower()}:{action}"))
        else:
            values.append(_zq(f"{option.name}[{text}]"))
    commands = "\n    ".join(_zq(f"{name}:{command.summary}") for name, command in COMMANDS.items())
    return f"""#compdef imgfs
# zsh completion for imgfs (made by `python -m imgfs.cli.docs zsh`)

_imgfs_options() {{
  _values -s , 'mount option' \\
    {' '.join(values)}
}}

_imgfs_mounts() {{
  local -a mounts
  mounts=(${{(f)"$(awk '$3 == "fuse.imgfs" {{ print $2 }}' /proc/mounts)"}})
  _describe -t mounts 'imgfs mount point' mounts
}}

_imgfs() {{
  local -a commands
  commands=(
    {commands}
  )
  if (( CURRENT == 2 )); then
    _describe -t commands 'imgfs command' commands
    _files
    return
  fi
  local -a opts
  opts=('*-o[mount options]:mount options:_imgfs_options' '(-h --help)'{{-h,--help}}'[show the usage]')
  case $words[2] in
    open) _arguments $opts '--no-browse[do not open the file manager]' '*:image:_files' ;;
    close|umount) _arguments $opts '*:mount point or image:{{_imgfs_mounts; _files}}' ;;
    list) _arguments '--json[as JSON]' ;;
    info) _arguments $opts '--json[every detail, as JSON]' '(-v --verbose)'{{-v,--verbose}}'[what was tried]' \\
            '1:image:_files' ;;
    ls) _arguments $opts '-l[long listing]' '-R[recursive]' '1:image:_files' '2:path in the image:' ;;
    cat) _arguments $opts '1:image:_files' '2:path in the image:' ;;
    extract) _arguments $opts '(-f --force)'{{-f,--force}}'[replace files in DEST]' '1:image:_files' \\
               '*:path or destination:_files' ;;
    verify) _arguments $opts '1:image:_files' ;;
    *) _arguments $opts '-f[stay in the foreground]' '-d[debug output]' '-s[one thread]' \\
         '(-V --version)'{{-V,--version}}'[the version]' '1:image:_files' '2:mount point:_files -/' ;;
  esac
}}

_imgfs "$@"
"""


def _zq(text: str) -> str:
    """``text`` in single quotes, for zsh."""
    return "'" + text.replace("'", "'\\''") + "'"


def main(argv: list[str]) -> int:
    makers = {"man": man_page, "bash": bash_completion, "zsh": zsh_completion}
    if len(argv) != 1 or argv[0] not in makers:
        print("usage: python -m imgfs.cli.docs man|bash|zsh", file=sys.stderr)
        return 2
    sys.stdout.write(makers[argv[0]]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

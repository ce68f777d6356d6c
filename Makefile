# imgfs: everything from a fresh Debian machine with nothing but Python.
#   make install   system packages, a venv in $(VENV), links in /usr/local/bin, /usr/local/sbin and /sbin,
#                  the desktop entry and MIME types, the man page and the bash and zsh completions
#   make demo      mount the bundled demo image, list it, unmount it
#   make test      the whole test suite against real FUSE mounts
#   make bench     the benchmark against raw pread and fuseiso (bench/run)
#   make fuzz      a fuzzing campaign: every target, FUZZ_RUNS inputs each (fuzz/, README "Reliability")
#   make soak      8 readers against ISO and DMG mounts for SOAK_SECONDS, every byte checked (not in CI)
#   make install-desktop install-docs PREFIX=~/.local   the desktop and documentation files alone (pipx users)

SHELL := /bin/bash
PYTHON ?= $(shell if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else command -v python3; fi)
# Outside the checkout, so that the unprivileged-user tests and mount(8) can run it from anywhere.
VENV ?= /opt/imgfs
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := fuse3 xorriso genisoimage python3-venv xz-utils bzip2 gzip util-linux \
	dosfstools mtools exfatprogs exfat-fuse e2fsprogs fdisk gdisk gcc libc6-dev attr \
	udftools udfclient bchunk iat nrg2iso ccd2iso mdf2iso 7zip dmg2img libcdio-utils \
	desktop-file-utils shared-mime-info xdg-utils libglib2.0-bin xvfb xauth pcmanfm scrot zsh bash-completion \
	wimtools ntfs-3g hfsutils mame-tools unar parted
BIN := $(VENV)/bin
PREFIX ?= /usr/local
SHARE = $(DESTDIR)$(PREFIX)/share
# Another apt (unattended-upgrades, a second make) may hold the dpkg lock: wait for it rather than fail.
APT_GET = $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600

FUZZ_DIR ?= /var/tmp/imgfs-fuzz
FUZZ_RUNS ?= 100000
FUZZ_JOBS ?= 2
SOAK_SECONDS ?= 300

.PHONY: deps install install-desktop install-docs test demo lint bench fuzz soak screenshot clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/python:
	$(SUDO) $(PYTHON) -m venv $(VENV)
	$(SUDO) $(BIN)/python -m pip install -q --upgrade pip

install: deps $(BIN)/python
	$(SUDO) $(BIN)/python -m pip install -q '.[dev]'
	$(SUDO) ln -sf $(BIN)/imgfs /usr/local/bin/imgfs
	$(SUDO) mkdir -p /usr/local/sbin
	$(SUDO) ln -sf $(BIN)/mount.imgfs /usr/local/sbin/mount.imgfs
	# mount(8) looks for mount.TYPE helpers only in /sbin (and /sbin/fs.d, /sbin/fs)
	$(SUDO) ln -sf $(BIN)/mount.imgfs /sbin/mount.imgfs
	$(MAKE) --no-print-directory install-desktop install-docs SUDO=$(SUDO)
	@echo "imgfs installed: $$(command -v imgfs)"

# "Open With" for disk images runs `imgfs open`: the desktop entry, and MIME types for the image kinds that
# shared-mime-info does not define; then the caches that file managers read.
install-desktop:
	$(SUDO) install -Dm644 imgfs/cli/share/applications/imgfs.desktop $(SHARE)/applications/imgfs.desktop
	$(SUDO) install -Dm644 imgfs/cli/share/mime/packages/imgfs.xml $(SHARE)/mime/packages/imgfs.xml
	-$(SUDO) update-mime-database $(SHARE)/mime
	-$(SUDO) update-desktop-database -q $(SHARE)/applications

# imgfs(1) and the completions, generated from the command's own tables (imgfs/cli/docs.py).
install-docs:
	$(SUDO) mkdir -p $(SHARE)/man/man1 $(SHARE)/bash-completion/completions $(SHARE)/zsh/site-functions
	$(BIN)/python -m imgfs.cli.docs man | $(SUDO) tee $(SHARE)/man/man1/imgfs.1 >/dev/null
	$(BIN)/python -m imgfs.cli.docs bash | $(SUDO) tee $(SHARE)/bash-completion/completions/imgfs >/dev/null
	$(BIN)/python -m imgfs.cli.docs zsh | $(SUDO) tee $(SHARE)/zsh/site-functions/_imgfs >/dev/null

fixtures/demo.iso: fixtures/make_demo.sh
	bash fixtures/make_demo.sh fixtures/demo.iso

demo: install fixtures/demo.iso
	@mnt=$$(mktemp -d); set -e; \
	echo "$$ imgfs fixtures/demo.iso $$mnt"; imgfs fixtures/demo.iso $$mnt; \
	echo "$$ ls -lR $$mnt"; ls -lR $$mnt; \
	echo "$$ cat $$mnt/README.txt"; cat $$mnt/README.txt; \
	echo "$$ imgfs umount $$mnt"; imgfs umount $$mnt; rmdir $$mnt

test: install
	$(BIN)/python -m pytest -q tests

fuzz: install
	$(BIN)/python fuzz/campaign.py --runs $(FUZZ_RUNS) --jobs $(FUZZ_JOBS) --dir $(FUZZ_DIR)

soak: install
	$(BIN)/python tests/soak.py --seconds $(SOAK_SECONDS)

lint:
	$(BIN)/ruff check imgfs tests bench fuzz
	$(BIN)/mypy imgfs

bench: install
	bench/run

# The README's screenshot: the demo image opened in PCManFM under Xvfb (fixtures/make_screenshot.sh).
screenshot: install fixtures/demo.iso
	fixtures/make_screenshot.sh fixtures/demo.iso fixtures/screenshot.png

clean:
	rm -rf build *.egg-info fixtures/demo.iso .pytest_cache

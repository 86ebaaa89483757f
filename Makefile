# make test   — venv, install with test extras, run the whole suite
# make demo   — keys, repository, example releases, server, a verifying client
# make lint   — ruff and mypy
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The independent JavaScript TUF client (tuf-js) used as an acceptance check.
TUFJS_SRC ?= $(firstword $(wildcard ../shared/tools/tufjs /work/shared/tools/tufjs))
TUFJS_DIR ?= $(CURDIR)/.tufjs
# A Debian kernel and a static busybox for the real-boot tests' guests (apt-get download: no
# install, ~72 MB, kept in .guest/ between runs).
GUEST_DIR ?= $(CURDIR)/.guest

.PHONY: test lint demo tufjs guest clean bench-publish bench-delta bench-powercut bench-install \
	bench-boot bench-director system-tools

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

tufjs: $(TUFJS_DIR)/node_modules/tuf-js/package.json

$(TUFJS_DIR)/node_modules/tuf-js/package.json:
	@if [ -z "$(TUFJS_SRC)" ]; then echo "tuf-js check not found (set TUFJS_SRC)"; exit 1; fi
	rm -rf $(TUFJS_DIR) && mkdir -p $(TUFJS_DIR)
	cp -r $(TUFJS_SRC)/. $(TUFJS_DIR)/
	cd $(TUFJS_DIR) && npm ci --silent --no-audit --no-fund

# Real tools the tests drive: GRUB's and U-Boot's environment editors, and QEMU with a BIOS
# GRUB and an AArch64 U-Boot to boot the bootloader scripts for real (tests/test_real_boot.py),
# and PostgreSQL 15, which the fleet database tests start as a throwaway server (tests/postgres.py).
SYSTEM_TOOLS := grub-editenv:grub-common fw_setenv:libubootenv-tool \
	qemu-system-x86_64:qemu-system-x86 /usr/lib/grub/i386-pc/boot.img:grub-pc-bin mcopy:mtools \
	mkfs.vfat:dosfstools sfdisk:fdisk qemu-system-aarch64:qemu-system-arm \
	/usr/lib/u-boot/qemu_arm64/u-boot.bin:u-boot-qemu /usr/lib/postgresql/15/bin/initdb:postgresql-15
system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do \
		{ command -v $${t%%:*} || test -e $${t%%:*}; } >/dev/null || missing="$$missing $${t##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
		{ $$sudo apt-get update -q >/dev/null && \
		  $$sudo apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; \
	fi

guest: $(GUEST_DIR)/.done

$(GUEST_DIR)/.done:
	rm -rf $(GUEST_DIR) && mkdir -p $(GUEST_DIR)/debs
	cd $(GUEST_DIR)/debs && kernel=$$(apt-cache depends linux-image-amd64 | awk '/Depends:/{print $$2; exit}') && \
		{ apt-get download -q $$kernel busybox-static >/dev/null 2>&1 || \
		  { sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); $$sudo apt-get update -q >/dev/null; \
		    kernel=$$(apt-cache depends linux-image-amd64 | awk '/Depends:/{print $$2; exit}'); \
		    apt-get download -q $$kernel busybox-static >/dev/null; }; }
	for deb in $(GUEST_DIR)/debs/*.deb; do dpkg-deb -x $$deb $(GUEST_DIR)/root; done
	rm -rf $(GUEST_DIR)/debs && touch $@

test: $(STAMP) system-tools
	@if [ -n "$(TUFJS_SRC)" ] && command -v npm >/dev/null; then $(MAKE) -s tufjs; fi
	@$(MAKE) -s guest || echo "no guest kernel: the in-guest boot tests will say so"
	OTA_TUFJS_DIR=$$([ -d $(TUFJS_DIR)/node_modules ] && echo $(TUFJS_DIR)) \
	OTA_GUEST_DIR=$$([ -f $(GUEST_DIR)/.done ] && echo $(GUEST_DIR)) \
		$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check ota_server ota_client tests manifests bench
	$(BIN)/ruff format --check ota_server ota_client tests manifests bench
	$(BIN)/mypy ota_client ota_server

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH bash demo/run.sh

clean:
	rm -rf $(VENV) $(TUFJS_DIR) $(GUEST_DIR) demo-home .pytest_cache .mypy_cache .ruff_cache

bench-publish: $(STAMP)
	$(BIN)/python -m bench.publish

bench-delta: $(STAMP)
	@$(MAKE) -s system-tools SYSTEM_TOOLS="zstd:zstd xdelta3:xdelta3 /usr/bin/time:time"
	$(BIN)/python -m bench.corpus
	$(BIN)/python -m bench.delta

bench-powercut: $(STAMP) system-tools
	OTA_POWERCUT_KILLS=1000 $(BIN)/pytest -q -s tests/test_powercut.py

bench-boot: $(STAMP) system-tools guest
	OTA_GUEST_DIR=$(GUEST_DIR) OTA_REALBOOT_STATES=300 OTA_REALBOOT_KILLS=300 \
		OTA_REALBOOT_GUEST_KILLS=200 OTA_REALBOOT_UBOOT_STATES=100 OTA_REALBOOT_JOBS=2 \
		$(BIN)/pytest -q -s tests/test_real_boot.py

bench-install: $(STAMP)
	$(BIN)/python -m bench.install

bench-director: $(STAMP)
	$(BIN)/python -m bench.director

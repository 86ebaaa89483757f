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

.PHONY: test lint demo tufjs clean bench-publish bench-delta bench-powercut bench-install \
	bench-boot system-tools

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
# GRUB to boot the GRUB script for real (tests/test_real_boot.py).
SYSTEM_TOOLS := grub-editenv:grub-common fw_setenv:libubootenv-tool \
	qemu-system-x86_64:qemu-system-x86 /usr/lib/grub/i386-pc/boot.img:grub-pc-bin mcopy:mtools \
	mkfs.vfat:dosfstools sfdisk:fdisk
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

test: $(STAMP) system-tools
	@if [ -n "$(TUFJS_SRC)" ] && command -v npm >/dev/null; then $(MAKE) -s tufjs; fi
	OTA_TUFJS_DIR=$$([ -d $(TUFJS_DIR)/node_modules ] && echo $(TUFJS_DIR)) \
		$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check ota_server ota_client tests manifests bench
	$(BIN)/ruff format --check ota_server ota_client tests manifests bench
	$(BIN)/mypy ota_client ota_server

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH bash demo/run.sh

clean:
	rm -rf $(VENV) $(TUFJS_DIR) demo-home .pytest_cache .mypy_cache .ruff_cache

bench-publish: $(STAMP)
	$(BIN)/python -m bench.publish

bench-delta: $(STAMP)
	@$(MAKE) -s system-tools SYSTEM_TOOLS="zstd:zstd xdelta3:xdelta3 /usr/bin/time:time"
	$(BIN)/python -m bench.corpus
	$(BIN)/python -m bench.delta

bench-powercut: $(STAMP) system-tools
	OTA_POWERCUT_KILLS=1000 $(BIN)/pytest -q -s tests/test_powercut.py

bench-boot: $(STAMP) system-tools
	OTA_REALBOOT_STATES=300 OTA_REALBOOT_KILLS=300 $(BIN)/pytest -q -s tests/test_real_boot.py

bench-install: $(STAMP)
	$(BIN)/python -m bench.install

# The two commands a newcomer needs (see README.md):
#   make demo   set up a virtual environment and run the main job (pytun-hash demo, needs root)
#   make test   set up a virtual environment, run ruff, mypy --strict, build the API reference (make docs) and the tests
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test lint typecheck docs pytest demo bench fuzz qemu-guest clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy

pytest: $(STAMP)
	$(PY) -m pytest

# The API reference from the docstrings (docs/api/index.html); an undocumented public name or a
# docstring pdoc cannot render fails it.
docs: $(STAMP)
	$(PY) docs/build.py

test: lint typecheck docs pytest

demo: $(STAMP)
	$(VENV)/bin/pytun-hash demo

# Every benchmark, one summary table (root for the eBPF and emulator ones: sudo make bench).
bench: $(STAMP)
	$(PY) benchmarks/summary.py

# The long fuzzing campaign: 100,000 examples per target, each target in its own process, as many at
# once as there are CPUs (hours; CI runs the short profile). Report in fuzz-report.md, logs in .fuzz-logs/.
fuzz: $(STAMP)
	$(PY) tests/fuzz/campaign.py --report fuzz-report.md

# The Linux guest of examples/qemu_guest.py, as root (docs/qemu.md): Debian's QEMU, kernel, busybox and
# ethtool (installed when missing, apt-get update first only if the install fails), then an initramfs
# built from them in $(QEMU_GUEST) (git-ignored). Nothing is downloaded when the example runs.
# The kernel package pulls in udev, whose postinst applies its static-node permissions (/dev/net/tun
# 0666, /dev/kvm 0660 group kvm); the modes and owners from before the install are put back, so the
# tests that check what an unprivileged user cannot do still see the machine as it was.
QEMU_GUEST ?= .cache/qemu-guest
QEMU_GUEST_PACKAGES := qemu-system-x86 linux-image-amd64 busybox-static ethtool
QEMU_GUEST_NODES := /dev/net/tun /dev/kvm

qemu-guest:
	@if ! dpkg -s $(QEMU_GUEST_PACKAGES) >/dev/null 2>&1; then \
		export DEBIAN_FRONTEND=noninteractive; \
		nodes=$$(for n in $(QEMU_GUEST_NODES); do [ -e $$n ] && stat -c '%a %u:%g %n' $$n; done); \
		echo "apt-get install -y --no-install-recommends $(QEMU_GUEST_PACKAGES)"; \
		apt-get install -y --no-install-recommends $(QEMU_GUEST_PACKAGES) \
		|| { apt-get update && apt-get install -y --no-install-recommends $(QEMU_GUEST_PACKAGES); }; \
		status=$$?; \
		echo "$$nodes" | while read -r mode owner node; do \
			[ -n "$$node" ] && chown "$$owner" "$$node" && chmod "$$mode" "$$node"; \
		done; \
		[ $$status -eq 0 ]; \
	fi
	$(PYTHON) examples/guest/build_guest.py --out $(QEMU_GUEST)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

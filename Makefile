# Shoal: build, test, demo, bench.
#
#   make demo    build, then reload three QEMU nodes over PXE and multicast,
#                boot them from their disks, capture one (root, QEMU/TCG)
#   make test    every test: unit, property, and integration (root, loop
#                devices, FUSE)
#   make bench   capture/deploy beside partclone + zstd, multicast loads
#                beside udpcast, TFTP beside tftpd-hpa, DHCP beside dnsmasq
#   make deps    install the Debian packages all of the above need
#   make fuzz    run every fuzz target for a while (needs cargo-fuzz)
#   make initramfs  the static agent and target/shoal-agent.initramfs for the
#                newest installed kernel (KVER=...), trusting `shoal key`

CARGO ?= cargo
FUZZ_SECONDS ?= 60

.PHONY: all build deps demo test bench fuzz initramfs clean

all: build

build:
	$(CARGO) build --workspace --bins

deps:
	scripts/deps.sh

demo: deps
	$(CARGO) build --release -p shoal-tests --bin shoal-demo
	CARGO=$(CARGO) target/release/shoal-demo

test: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

bench: deps
	$(CARGO) build --release --bin shoal
	scripts/bench.sh target/release/shoal
	$(CARGO) build --release --bin shoal-agent && scripts/bench-mcast.sh target/release/shoal target/release/shoal-agent
	$(CARGO) build --release --bin shoal-pxe-bench && scripts/bench-pxe.sh target/release/shoal-pxe-bench

fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	cd proto/fuzz && for t in manifest chunk mcast; do \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done
	cd pxe/fuzz && for t in tftp dhcp; do \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

KVER ?= $(shell ls /lib/modules | sort -V | tail -n 1)
STATIC_AGENT = target/static/x86_64-unknown-linux-gnu/agent/shoal-agent

initramfs:
	RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
	  $(CARGO) build --profile agent -p shoal-agent --target x86_64-unknown-linux-gnu --target-dir target/static
	$(CARGO) build --bin shoal
	target/debug/shoal key > target/server.pub
	target/debug/shoal initramfs build --kernel-version $(KVER) --agent $(STATIC_AGENT) \
	  --key target/server.pub --out target/shoal-agent.initramfs $(if $(wildcard /usr/bin/busybox),--busybox /usr/bin/busybox)

clean:
	$(CARGO) clean

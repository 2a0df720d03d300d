# anklume Live OS — top-level commands. See README.md.

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# Reproducible builds: every date in the image is this one.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# Exported: gcc (mimalloc's C code uses __DATE__/__TIME__) and mkosi read it.
export SOURCE_DATE_EPOCH
CARGO_HOME ?= $(HOME)/.cargo
# Release builds that do not depend on where the checkout or the cargo
# registry lives: the absolute paths in panic messages, debug line tables and
# C objects are rewritten to /anklume and /cargo (docs/live-os.md,
# "Reproducible builds").
CARGO_RELEASE = cargo build --release --locked \
	--config 'build.rustflags = ["--remap-path-prefix=$(CURDIR)=/anklume", "--remap-path-prefix=$(CARGO_HOME)=/cargo"]' \
	--config 'env.CFLAGS = "-ffile-prefix-map=$(CURDIR)=/anklume -ffile-prefix-map=$(CARGO_HOME)=/cargo"'
ISO := out/anklume-$(VERSION).iso
RAW := out/anklume-$(VERSION).raw
# Images `make iso` writes: iso, raw, or both (the default: the VM scenarios
# persist and rollback boot the raw image).
FORMATS ?= iso,raw
comma := ,
IMAGES = $(foreach f,$(subst $(comma), ,$(FORMATS)),out/anklume-$(VERSION).$(f))
# VM scenarios for live-os-test-vm: all, ci, or names (bios-disk uefi-cd ...).
SCENARIOS ?= all
# Throwaway Secure Boot key pair that `make test` signs its images with
# (a user's own key: ANKLUME_SIGNING_KEY / ANKLUME_SIGNING_CERT, see
# docs/live-os.md). Never a key that signs a release.
TEST_KEYS := $(CURDIR)/build/test-keys
# The update scenarios' bundles: this build's rootfs reassembled as a newer
# version and signed with the test update key (and with a key the image
# does not trust).
NEXT_VERSION := $(VERSION).1
NEXT := build/next
BUNDLE := $(NEXT)/anklume-$(NEXT_VERSION).bundle
FOREIGN_BUNDLE := $(NEXT)/anklume-$(NEXT_VERSION)-foreign-key.bundle
# update-broken: a newer version whose extra health check always fails.
BROKEN_VERSION := $(VERSION).2
BROKEN := build/next-broken
BROKEN_BUNDLE := $(BROKEN)/anklume-$(BROKEN_VERSION)-broken.bundle

# What `make test` builds its images with.
TEST_SIGNING = ANKLUME_SIGNING_KEY=$(TEST_KEYS)/db.key ANKLUME_SIGNING_CERT=$(TEST_KEYS)/db.crt
TEST_ENV = $(TEST_SIGNING) ANKLUME_UPDATE_PUBKEY=$(TEST_KEYS)/update.pub

.PHONY: all build iso iso-zfs test-keys test-bundles test-bundle-broken check-image test test-unit live-os-test-vm live-os-test-vm-clean bench sync-bench apply-bench verity-bench assembly-bench clean

all: iso

## The main job: the hybrid BIOS/UEFI ISO and the raw GPT disk image in
## out/ (+ SHA256SUMS); FORMATS=iso for the ISO alone.
iso:
	bash ci/setup
	bash ci/setup-image
	$(CARGO_RELEASE) --workspace
	./target/release/anklume-build iso --bin-dir target/release --source-date-epoch $(SOURCE_DATE_EPOCH) --version $(VERSION) --format $(FORMATS)

## The ZFS variant (docs/firstboot.md, "ZFS"): mkosi/debian plus OpenZFS,
## its module built by DKMS during the image build; the raw image only, in
## out/zfs/. Not part of `make iso`: it takes several minutes more.
RAW_ZFS := out/zfs/anklume-$(VERSION).raw
iso-zfs:
	bash ci/setup
	bash ci/setup-image
	$(CARGO_RELEASE) --workspace
	./target/release/anklume-build iso --mkosi-dir mkosi/debian-zfs --work-dir build/zfs --out-dir out/zfs --bin-dir target/release --source-date-epoch $(SOURCE_DATE_EPOCH) --version $(VERSION) --format raw

## Throwaway keys for the tests (kept across runs): a Secure Boot key pair,
## the update key the test images trust, and one they do not.
test-keys: $(TEST_KEYS)/db.crt $(TEST_KEYS)/update.key $(TEST_KEYS)/foreign.key
$(TEST_KEYS)/db.crt:
	mkdir -p $(TEST_KEYS)
	openssl req -new -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
		-subj "/CN=anklume throwaway test key/" \
		-keyout $(TEST_KEYS)/db.key -out $(TEST_KEYS)/db.crt.tmp 2>/dev/null
	mv $(TEST_KEYS)/db.crt.tmp $@
# Each pair is made whole (.key and .pub) when its .key is missing.
$(TEST_KEYS)/update.key $(TEST_KEYS)/foreign.key:
	bash ci/setup
	mkdir -p $(TEST_KEYS)
	$(CARGO_RELEASE) -p anklume-update
	rm -f $(@:.key=.pub)
	./target/release/anklume-update --new-key $(@:.key=)

## The update scenarios' bundles (after `make iso`): the same rootfs as a
## newer version, NEXT_VERSION, signed with the trusted test key and with
## a foreign one.
test-bundles: $(TEST_KEYS)/db.crt $(TEST_KEYS)/update.key $(TEST_KEYS)/foreign.key
	test -d build/mkosi-out/rootfs || { echo "test-bundles: no build/mkosi-out/rootfs: run make iso first" >&2; exit 1; }
	$(CARGO_RELEASE) --workspace
	$(TEST_SIGNING) ./target/release/anklume-build iso --rootfs build/mkosi-out/rootfs --work-dir $(NEXT) \
		--out-dir $(NEXT)/out --source-date-epoch $(SOURCE_DATE_EPOCH) --version $(NEXT_VERSION) --format iso --quiet
	./target/release/anklume-build bundle --work-dir $(NEXT) --rootfs build/mkosi-out/rootfs \
		--update-key $(TEST_KEYS)/update.key --out $(BUNDLE)
	./target/release/anklume-build bundle --work-dir $(NEXT) --rootfs build/mkosi-out/rootfs \
		--update-key $(TEST_KEYS)/foreign.key --out $(FOREIGN_BUNDLE)

## update-broken's bundle: the rootfs (a hard-linked copy) plus a health
## check that always fails, as BROKEN_VERSION, signed with the trusted key.
test-bundle-broken: $(TEST_KEYS)/db.crt $(TEST_KEYS)/update.key
	test -d build/mkosi-out/rootfs || { echo "test-bundle-broken: no build/mkosi-out/rootfs: run make iso first" >&2; exit 1; }
	$(CARGO_RELEASE) --workspace
	rm -rf $(BROKEN)
	mkdir -p $(BROKEN)
	cp -al build/mkosi-out/rootfs $(BROKEN)/rootfs
	install -D -m 0755 tests/vm/broken-health-check $(BROKEN)/rootfs/etc/anklume/health.d/90-update-broken-test
	$(TEST_SIGNING) ./target/release/anklume-build iso --rootfs $(BROKEN)/rootfs --work-dir $(BROKEN) \
		--out-dir $(BROKEN)/out --source-date-epoch $(SOURCE_DATE_EPOCH) --version $(BROKEN_VERSION) --format iso --quiet
	./target/release/anklume-build bundle --work-dir $(BROKEN) --rootfs $(BROKEN)/rootfs \
		--update-key $(TEST_KEYS)/update.key --out $(BROKEN_BUNDLE)
	rm -rf $(BROKEN)/rootfs $(BROKEN)/out

## Build every crate (release).
build:
	bash ci/setup
	$(CARGO_RELEASE) --workspace

## The test command: fmt, clippy -D warnings, all cargo tests, then both
## images, their checks and the CI boot scenarios (see tests/vm).
test:
	bash ci/test
	$(MAKE) test-keys
	$(TEST_ENV) $(MAKE) iso
	$(TEST_ENV) $(MAKE) check-image
	$(MAKE) live-os-test-vm SCENARIOS=ci

## xorriso/sgdisk/fsck.vfat/veritysetup checks of the images in out/, and
## a second clone of the same commit (work tree changes included) in
## build/repro-clone whose `make iso` must give the same bytes.
check-image:
	bash ci/check-image --repro-clone $(SOURCE_DATE_EPOCH) $(VERSION) $(IMAGES)

## Only the cargo-level checks (no image, no VM).
test-unit:
	bash ci/test

## Boot the built image in QEMU and check it from inside the guest.
# The update scenarios' bundles are made first, from this build's rootfs,
# when the scenarios asked for need them.
UPDATE_SCENARIOS := ci update update-rejected update-powercut stick-grow update-sb
live-os-test-vm: $(if $(filter all $(UPDATE_SCENARIOS) update-broken,$(SCENARIOS)),test-bundles) \
		$(if $(filter all update-broken,$(SCENARIOS)),test-bundle-broken) \
		$(if $(filter all pool-zfs,$(SCENARIOS)),iso-zfs)
	bash ci/setup-image
	$(CARGO_RELEASE) -p anklume-vmtest
	./target/release/anklume-vmtest --iso $(ISO) $(if $(wildcard $(RAW)),--raw $(RAW)) \
		$(if $(wildcard $(BUNDLE)),--bundle $(BUNDLE)) \
		$(if $(wildcard $(FOREIGN_BUNDLE)),--foreign-bundle $(FOREIGN_BUNDLE)) \
		$(if $(wildcard $(BROKEN_BUNDLE)),--broken-bundle $(BROKEN_BUNDLE)) \
		$(if $(wildcard $(RAW_ZFS)),--raw-zfs $(RAW_ZFS)) \
		--work-dir build/vmtest $(SCENARIOS)

live-os-test-vm-clean:
	rm -rf build/vmtest

## Benchmarks (figures printed; nothing asserted).
bench: sync-bench apply-bench verity-bench assembly-bench

sync-bench:
	cargo bench -p anklume --bench sync

## A private incusd: 20 domains × 5 containers, first and no-op apply vs
## the incus CLI (root; several minutes).
apply-bench:
	bash ci/setup-image
	cargo bench -p anklume --bench apply

verity-bench:
	bash ci/setup-image
	bench/verity.sh

## Needs the rootfs of a previous `make iso` (build/mkosi-out/rootfs).
assembly-bench:
	bash ci/setup-image
	bench/assembly.sh

clean:
	cargo clean
	rm -rf build out

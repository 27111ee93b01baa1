package fakeapi

import (
	_ "embed" // the stand-in scripts
)

// standInAptUpdate is the seeded debian script: our stand-in for the
// backend's debian/apt-update.sh (scripts/apt-update.sh).
//
//go:embed scripts/apt-update.sh
var standInAptUpdate []byte

// fakeAptGet is a package manager for the stand-in to find on its PATH in
// tests (scripts/apt-get).
//
//go:embed scripts/apt-get
var fakeAptGet []byte

// StandInAptUpdate returns the stand-in update script the fake seeds as
// the debian family's apt-update.sh: it takes [--dry-run] [--exclude a,b],
// asks the apt-get on its PATH what it would upgrade and prints the plan
// or upgrades the packages not excluded.
func StandInAptUpdate() []byte { return append([]byte(nil), standInAptUpdate...) }

// FakeAptGet returns a fake apt-get that never touches the host: install
// it (mode 0755) in a root-owned directory with an "upgradable" file
// ("name old new" per line) and point the policy's patches.path at it. It
// logs each call to "calls.log" beside it; see the script for the files
// that make it wait ("hold") or leave a setsid child behind ("spawn").
func FakeAptGet() []byte { return append([]byte(nil), fakeAptGet...) }

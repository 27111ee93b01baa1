// Package patch runs patch scripts for the broker: it hashes the exact
// bytes it was handed, checks them against the expected sha256, and runs
// those bytes, never a path re-read after the check. The bytes go into a
// memfd sealed against every change (F_SEAL_WRITE, F_SEAL_GROW,
// F_SEAL_SHRINK, F_SEAL_SEAL); the interpreter the script's #! line names
// (from the policy's list) reads them from /dev/fd/3, with stdin
// /dev/null, so no child that reads stdin (a dpkg prompt) can eat the
// script. The environment is fixed (the policy's PATH, LANG=C.UTF-8,
// DEBIAN_FRONTEND=noninteractive) and the broker builds the arguments
// itself: --dry-run for a dry run, --exclude a,b from checked package
// names.
//
// Runs go one at a time and are detached: a run outlives the request that
// started it and the worker that asked (it belongs to the broker process,
// through a Launcher). Each run has a record in the broker's own state
// directory (root-only, never the worker's), written before the script
// starts and again when it ends, with its output; Result returns it by
// operation id, and a second start of the same operation returns the
// record instead of running the script again. A record left "running" by
// a broker process that is gone is marked interrupted when the next one
// starts.
//
// The policy decision (enabled, mode, pins) is the caller's; this package
// takes its own types and knows nothing of protobuf or the policy schema.
package patch

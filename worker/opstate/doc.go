// Package opstate is the worker's on-disk record of the operations it was
// handed (investigations, patch operations, reboots), so that none is run
// twice across disconnects and restarts and none is left "running" forever
// after a crash.
//
// Each entry holds an operation's kind and id, its state (received, running,
// done, failed, skipped), when the worker first saw it and what that says
// about the record's age, and what the backend still has to be told. The
// file (operations.json in the worker's state directory) is rewritten
// atomically on every change: a temporary file is written and fsynced,
// renamed over the old one, and the directory is fsynced. A lock file keeps
// a second process off the same directory.
//
// Claim is the one place where duplicates are refused: it is atomic within
// the process (the stream and the catch-up may race on the same id) and
// durable before it returns, and Start writes "running" before the caller
// runs anything. Entries left "running" by a crash are listed by Orphans for
// the caller's recovery.
//
// A state file that cannot be decoded is not dropped: it is renamed to
// operations.json.corrupt-<time> and the store starts empty in degraded
// mode (Degraded reports why) for as long as such a file is in the
// directory, so an operator can look at it. The caller decides what
// degraded mode forbids; the realtime package refuses patch "apply" runs
// and reboots then.
package opstate

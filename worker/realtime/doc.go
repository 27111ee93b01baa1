// Package realtime receives this agent's operations — investigations,
// patch operations, reboots — from NannyAPI and hands each to its handler
// exactly once, across disconnects and restarts.
//
// # Two paths, one dispatch
//
// The stream is PocketBase's SSE endpoint (parsed with tmaxmax/go-sse):
// PB_CONNECT gives a clientId, which is subscribed to the collections that
// have a handler (204); every frame's event name is its collection. The
// backend closes an idle stream after 5 minutes and gives every connection
// a new clientId, so each connect subscribes again; a clean close after a
// healthy session reconnects at once, errors back off (jittered, doubling
// from BackoffMin to BackoffMax), and a read-idle deadline just above the
// backend's idle close ends a half-open connection.
//
// The catch-up lists this agent's open records through the records API
// (investigations and patches "pending", reboots "sent") after every
// subscribe and every CatchUpInterval: events sent while no subscription
// existed are lost, and a subscribe answers 204 even when it will deliver
// nothing.
//
// Both paths feed one function (offer): records of another agent, records
// not open any more and this worker's own investigations are dropped;
// opstate's claim then refuses every id already held or handled, so
// whichever path comes second does nothing. Claimed operations wait in a
// bounded queue per kind and run on a fixed number of workers per kind.
// "running" is on disk before a handler starts. Update and delete events
// keep a queued operation from starting when the backend moved it on
// (completed elsewhere, timed out, deleted).
//
// # Own investigations
//
// The backend echoes an investigation this agent created as a "create"
// with metadata.initiated_by "agent"; that id is recorded as own and never
// run. The records API loses metadata (nannyapi-backend.md §6), so the
// worker records ids it creates (RecordOwnInvestigation, or
// BeginOwnInvestigation, which also holds back catch-ups while a create is
// in flight), and the claim refuses them.
//
// # Staleness
//
// Records carry no creation time. The rules:
//
//   - A reboot never runs at or after requested_at + timeout_seconds (a
//     missing or malformed requested_at counts as past); its handler's
//     context carries that deadline. A skipped reboot is reported through
//     Reporter.FailReboot, which the observed backend cannot take (no
//     /fail route): it is logged, and the backend times the reboot out.
//   - Every record gets NotBefore when first seen: a stream "create" is
//     new (now); a record first seen by a catch-up existed no earlier than
//     the previous complete catch-up of its kind started, since that one
//     would have listed it; on a fresh install, or for a kind that just got
//     a handler (no catch-up of it recorded), its age is unknown. NotBefore is kept in opstate, so a restart does not make a
//     waiting record look new.
//   - A patch in "apply" mode runs only if its NotBefore is known and
//     within MaxApplyAge (default 24h). So the initial backlog of a fresh
//     install, and anything that waited through a long outage, is not
//     applied: it is reported failed (result upload, exit code 1, the
//     reason as stderr) so the operator can request it again.
//   - Investigations and dry-run patches change nothing on the host: they
//     run whatever their age, also from a fresh install's backlog.
//
// # Restarts and recovery
//
// Run starts by resolving what a previous process left running (see
// opstate.Store.Orphans; until resolved, the claim refuses those ids), never
// re-running it: an investigation is
// reported failed ("worker restarted during the investigation"); a patch
// is looked up through PatchRecovery (the broker's detached run: finished
// → its result is uploaded; never started → reported failed; still
// running → asked again every RecoverInterval); a reboot counts as done only if it was
// acknowledged and the host booted after that, else it is failed.
//
// # Degraded record
//
// If the state file was corrupt, opstate keeps it aside and reports
// Degraded until an operator removes it. Meanwhile patch "apply" runs and
// reboots are refused and reported failed (they must never run twice),
// while investigations and dry-runs go on.
package realtime

// Package nannyapi is the worker's HTTP client for NannyAPI, the NannyAI
// backend (a PocketBase application).
//
// It speaks the agent-facing wire contract as a real backend answers it
// (shared/reference/nannyapi-backend.md): one POST /api/agent endpoint
// switched on "action", the investigations proxy, the PocketBase records API,
// patch scripts and results, reboots, Proxmox ingestion and /api/health.
//
// Every call has a dial, TLS, first-byte and overall timeout; the AI proxy
// turn has its own long timeout. Retries are bounded, exponential with
// jitter, and happen only where they are safe: any call whose request
// provably never reached the server (no connection was obtained), and
// idempotent calls on 502/503/504 or a lost connection. The bearer token is
// sent only to the configured NannyAPI origin. Every backend answer is
// decoded strictly (an object of the right shape, required fields present)
// and leniently (unknown fields ignored); each decoder has a fuzz target.
package nannyapi

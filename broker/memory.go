package broker

import (
	"github.com/nannyai/nannyagent/policy"
)

// memoryBase is what the broker needs with nothing in flight: the Go
// runtime, the policy, the probe's facts, gRPC's connections.
const memoryBase = 64 << 20

// MemoryCeiling is the most memory the broker process itself should need
// under the policy's limits: its base; the requests it may be reading at
// once (the read budget), each counted twice (the bytes gRPC read and the
// decoded message); the output of every command or pvesh call that may run
// at once (they share the concurrent_commands slots), twice (captured, then
// marshalled into the reply); and the output of every trace that may run
// at once, three times (collected, bounded, marshalled); and the one patch
// run's stdout and stderr, three times (captured, read back from its
// record for PatchResult, marshalled). The broker sets
// its Go memory limit to it, and its own cgroup's memory limit a quarter
// above it; the runs have cgroups of their own and are not under it.
func MemoryCeiling(l policy.Limits) int64 {
	requests := int64(readSlots) * l.RequestBytes * 2
	perCommand := max(l.StdoutBytes+l.StderrBytes, l.ProxmoxOutputBytes)
	commands := int64(l.ConcurrentCommands) * perCommand * 2
	traces := int64(l.ConcurrentTraces) * l.TraceOutputBytes * 3
	patches := 2 * l.PatchOutputBytes * 3
	return memoryBase + requests + commands + traces + patches
}

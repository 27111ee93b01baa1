package execute

import (
	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Proto is the containment as reported by Probe.
func (i Info) Proto() *brokerv1.CgroupInfo {
	return &brokerv1.CgroupInfo{
		V2Kill:           i.V2Kill,
		V2Path:           i.V2Path,
		MemoryController: i.MemoryController,
		PidsController:   i.PidsController,
	}
}

// Proto is the confinement as reported by Probe.
func (i ConfinementInfo) Proto() *brokerv1.ConfinementInfo {
	return &brokerv1.ConfinementInfo{Landlock: i.Landlock, LandlockAbi: int32(i.ABI), Denies: i.Denies, Reason: i.Reason}
}

// Proto fills the outcome fields of a RunCommandResponse. The caller sets
// id and decision, and puts a Run error (nothing ran) into Error.
func (res *Result) Proto() *brokerv1.RunCommandResponse {
	out := &brokerv1.RunCommandResponse{
		ExitCode:        int32(res.ExitCode),
		Stdout:          res.Stdout,
		StdoutTruncated: res.StdoutTruncated,
		Stderr:          res.Stderr,
		StderrTruncated: res.StderrTruncated,
		Duration:        durationpb.New(res.Duration),
		TimedOut:        res.TimedOut,
		Canceled:        res.Canceled,
		MemoryLimitHit:  res.MemoryLimitHit,
		TaskLimitHit:    res.TaskLimitHit,
	}
	for _, s := range res.Stages {
		out.Stages = append(out.Stages, &brokerv1.StageResult{
			Program:  s.Program,
			ExitCode: int32(s.ExitCode),
			Signal:   s.Signal,
			Duration: durationpb.New(s.Duration),
		})
	}
	return out
}

// Package execute is the broker's launcher: every process the broker
// starts goes through it, diagnostic pipelines the policy approved (Run)
// and single programs (StartAttached, StartDetached, Output) such as
// bpftrace, pvesh, the probe's checks and, later, patch runs.
//
// It assumes the request is hostile even after the policy said yes: it
// execs absolute program paths with a fixed argv (never a shell, never a
// PATH lookup), refuses programs a non-root account could replace, wires
// the pipes itself, gives children a fixed environment, sets no_new_privs
// on every child, drops to the stage's account, resolves every path
// operand one symlink hop at a time (judging each hop) and hands content
// readers an already-open file. Every launch lives in run cgroups of its
// own with memory and task caps and a deadline, and its whole process tree
// dies with it, through cgroup v2's cgroup.kill or, where that is missing,
// a per-run subreaper helper process.
//
// Runs are attached (they end with the caller's context: diagnostics) or
// detached (the same launch with a lifetime of its own: patch runs). The
// limits given are the limits enforced: the package adds no cap of its own
// beyond them.
//
// The broker's main must call [HelperMain] early when [IsHelper] reports
// true; the subreaper path re-executes the broker binary in that mode.
package execute

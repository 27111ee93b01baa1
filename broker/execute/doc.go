// Package execute turns a pipeline that the policy approved into processes.
//
// It is the broker's only way to start a diagnostic command, so it assumes
// the request is hostile even after the policy said yes: it execs absolute
// program paths with a fixed argv (never a shell, never a PATH lookup), wires
// the pipes itself, scrubs the environment, sets no_new_privs on every child,
// drops to the stage's account, resolves every path operand one symlink hop
// at a time (judging each hop), hands content readers an already-open file,
// and holds every run to the broker's limits: time, output bytes, concurrent
// runs, stages, argv size, child tasks and memory. A run's whole process tree
// dies with it, through a cgroup v2 cgroup.kill or, where that is missing, a
// per-run subreaper helper process.
//
// The broker's main must call [HelperMain] early when [IsHelper] reports
// true; the subreaper path re-executes the broker binary in that mode.
package execute

package execute

import (
	"fmt"
	"os"
	"strconv"
)

// preparedStage is a checked stage: argv with its path operands replaced,
// the files opened for it and the account it runs as.
type preparedStage struct {
	Stage
	argv  []string
	files []*os.File // child fds 3, 4, ... in order
	cred  *credSpec
	// missing are path operands that did not exist; the tool got them
	// and answered for itself.
	missing []string
}

// plan is a pipeline ready to start: the child-side descriptors (the file
// table), one procSpec per stage, and the parent's read ends.
type plan struct {
	table []*os.File
	// shared is in the table but belongs to the runner (its /dev/null).
	shared   *os.File
	procs    []procSpec
	programs []string
	stdout   *os.File
	stderr   *os.File
}

// buildPlan wires the stages: stdin of the first stage is /dev/null, each
// stdout feeds the next stage's stdin, the last stdout and every
// non-redirected stderr are captured. A stage whose stdout goes to
// /dev/null gives the next stage an empty stdin, as a shell pipe would.
func buildPlan(stages []preparedStage, devNull *os.File) (_ *plan, err error) {
	p := &plan{shared: devNull}
	defer func() {
		if err != nil {
			p.closeAll()
		}
	}()
	nul := p.add(devNull)
	last := stages[len(stages)-1]
	outW, errW := -1, -1
	if !last.StdoutToNull {
		if p.stdout, outW, err = p.pipe(); err != nil {
			return nil, err
		}
	}
	if needsStderrPipe(stages) {
		if p.stderr, errW, err = p.pipe(); err != nil {
			return nil, err
		}
	}
	stdin := nul
	for i, st := range stages {
		stdout, next := nul, nul
		switch {
		case st.StdoutToNull:
		case i == len(stages)-1:
			stdout = outW
		default:
			r, w, err := os.Pipe()
			if err != nil {
				return nil, fmt.Errorf("pipe: %w", err)
			}
			stdout, next = p.add(w), p.add(r)
		}
		stderr := errW
		if st.StderrToNull {
			stderr = nul
		} else if st.StderrToStdout {
			stderr = stdout
		}
		files := []int{stdin, stdout, stderr}
		for _, f := range st.files {
			files = append(files, p.add(f))
		}
		p.procs = append(p.procs, procSpec{Path: st.Program, Argv: st.argv, Files: files, Cred: st.cred})
		p.programs = append(p.programs, st.Program)
		stdin = next
	}
	return p, nil
}

func needsStderrPipe(stages []preparedStage) bool {
	for _, st := range stages {
		if !st.StderrToNull && !st.StderrToStdout {
			return true
		}
	}
	return false
}

func (p *plan) add(f *os.File) int {
	p.table = append(p.table, f)
	return len(p.table) - 1
}

// pipe makes a capture pipe: the parent keeps the read end, the write end
// goes into the table.
func (p *plan) pipe() (*os.File, int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, -1, fmt.Errorf("pipe: %w", err)
	}
	return r, p.add(w), nil
}

// closeChildSide drops the parent's copies of the children's descriptors,
// so the capture pipes reach EOF when the children are done.
func (p *plan) closeChildSide() {
	for _, f := range p.table {
		if f != p.shared {
			f.Close()
		}
	}
	p.table = nil
}

func (p *plan) closeAll() {
	p.closeChildSide()
	closeFiles(p.stdout, p.stderr)
}

// fdArg is the argv element that names inherited descriptor n.
func fdArg(n int) string { return "/dev/fd/" + strconv.Itoa(n) }

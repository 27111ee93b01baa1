package policy

import (
	"fmt"
	"strings"
)

// Error is one problem in a policy file, with its position.
type Error struct {
	File   string `json:"file"`
	Line   int    `json:"line,omitempty"`
	Column int    `json:"column,omitempty"`
	Msg    string `json:"message"`
}

// Error formats the problem as FILE:LINE:COLUMN: MESSAGE, the form editors
// and CI annotations understand.
func (e *Error) Error() string {
	switch {
	case e.Line > 0 && e.Column > 0:
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	default:
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
}

// maxErrors bounds how many problems one load reports, so a file of garbage
// gives a readable answer.
const maxErrors = 50

// ErrorList is every problem found while loading a policy. A policy with any
// problem is not loaded at all.
type ErrorList struct {
	Errs      []*Error
	Truncated bool
}

// Error joins the problems one per line.
func (l *ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l.Errs {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	if l.Truncated {
		fmt.Fprintf(&b, "\n(more than %d problems; fix these first)", maxErrors)
	}
	return b.String()
}

// Unwrap lets errors.As find the individual problems.
func (l *ErrorList) Unwrap() []error {
	out := make([]error, len(l.Errs))
	for i, e := range l.Errs {
		out[i] = e
	}
	return out
}

func (l *ErrorList) add(e *Error) {
	if len(l.Errs) >= maxErrors {
		l.Truncated = true
		return
	}
	l.Errs = append(l.Errs, e)
}

func (l *ErrorList) err() error {
	if l == nil || len(l.Errs) == 0 {
		return nil
	}
	return l
}

// pos is where something was written, kept on rules for later messages.
type pos struct {
	File string
	Line int
}

func (p pos) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return p.File
}

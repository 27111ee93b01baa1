package proxmox

import (
	"fmt"
	"strconv"
	"strings"
)

// Placeholders an allowed-path pattern may use.
const (
	placeholderLocal = "{local}"
	placeholderVMID  = "{vmid}"
)

// maxPathLen bounds a requested path; real ones are far shorter.
const maxPathLen = 256

// Guest id bounds, as Proxmox's pve-vmid format has them.
const (
	minVMID = 100
	maxVMID = 999999999
)

// DefaultAllowedPaths are the reads the worker's inventory cycle needs.
var DefaultAllowedPaths = []string{
	"/cluster/status",
	"/cluster/resources",
	"/nodes/{local}/status",
	"/nodes/{local}/lxc/{vmid}/config",
	"/nodes/{local}/qemu/{vmid}/config",
}

// pattern is one allowed path, split into segments.
type pattern struct {
	raw  string
	segs []string
	// guest is "lxc" or "qemu" for the two config patterns that are read
	// from pmxcfs instead of pvesh; "" otherwise.
	guest string
}

// parsePattern checks an allowed-path pattern. A pattern that names a node
// must name it as {local}: pvesh proxies another node's path over the
// network, which the broker never does.
func parsePattern(raw string) (pattern, error) {
	segs, err := splitPath(raw, true)
	if err != nil {
		return pattern{}, fmt.Errorf("allowed path %q: %w", raw, err)
	}
	for i, s := range segs {
		if s == placeholderLocal && (i != 1 || segs[0] != "nodes") {
			return pattern{}, fmt.Errorf("allowed path %q: {local} only as /nodes/{local}", raw)
		}
	}
	if len(segs) >= 2 && segs[0] == "nodes" && segs[1] != placeholderLocal {
		return pattern{}, fmt.Errorf("allowed path %q: a node path must use {local}", raw)
	}
	p := pattern{raw: raw, segs: segs}
	if len(segs) == 5 && segs[0] == "nodes" && segs[1] == placeholderLocal && segs[3] == placeholderVMID && segs[4] == "config" {
		switch segs[2] {
		case "lxc", "qemu":
			p.guest = segs[2]
		}
	}
	return p, nil
}

// splitPath checks the syntax of an API path and returns its segments:
// absolute, no empty, "." or ".." segments, only [A-Za-z0-9_.-] (and the
// placeholders in patterns), at most maxPathLen bytes.
func splitPath(p string, placeholders bool) ([]string, error) {
	if p == "" || p[0] != '/' {
		return nil, fmt.Errorf("path must start with /")
	}
	if len(p) > maxPathLen {
		return nil, fmt.Errorf("path longer than %d bytes", maxPathLen)
	}
	segs := strings.Split(p[1:], "/")
	for _, s := range segs {
		switch {
		case s == "":
			return nil, fmt.Errorf("empty path segment")
		case s == "." || s == "..":
			return nil, fmt.Errorf("path segment %q", s)
		case placeholders && (s == placeholderLocal || s == placeholderVMID):
		case !safeSegment(s):
			return nil, fmt.Errorf("path segment %q has characters outside [A-Za-z0-9_.-]", s)
		}
	}
	return segs, nil
}

func safeSegment(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// ValidNodeName reports whether s is a Proxmox node name: letters, digits
// and hyphens, starting and ending with a letter or digit, at most 63 bytes.
func ValidNodeName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// ParseVMID parses a guest id: decimal, no sign or leading zero, 100…999999999.
func ParseVMID(s string) (int, bool) {
	if len(s) < 3 || len(s) > 9 || s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < minVMID || v > maxVMID {
		return 0, false
	}
	return v, true
}

// match is the outcome of checking a path against one pattern.
type match int

const (
	noMatch   match = iota
	matched         // allowed
	badSyntax       // right shape, but a node name or vmid is malformed
	otherNode       // right shape, but names a node other than the local one
)

// matchPattern checks segs (a syntax-checked path) against p for the local
// node; it returns the vmid when p has one.
func matchPattern(p pattern, segs []string, local string) (match, int) {
	if len(p.segs) != len(segs) {
		return noMatch, 0
	}
	result, vmid := matched, 0
	for i, want := range p.segs {
		got := segs[i]
		switch want {
		case placeholderLocal:
			switch {
			case !ValidNodeName(got):
				result = worse(result, badSyntax)
			case got != local:
				result = worse(result, otherNode)
			}
		case placeholderVMID:
			v, ok := ParseVMID(got)
			if !ok {
				result = worse(result, badSyntax)
			}
			vmid = v
		default:
			if got != want {
				return noMatch, 0
			}
		}
	}
	return result, vmid
}

// worse keeps the verdict that refuses more firmly: another node's path is
// refused even when its vmid is also malformed.
func worse(a, b match) match {
	if b > a {
		return b
	}
	return a
}

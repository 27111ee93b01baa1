// Package proxmox serves the broker's ProxmoxGet RPC: reads of allowed
// Proxmox API paths on the local node. Cluster and node state come from
// `pvesh get … --output-format json` (a fixed argv, clean environment,
// timeout and output cap); guest configs are read directly from pmxcfs
// (/etc/pve/nodes/<local>/{lxc,qemu-server}/<vmid>.conf) and returned as the
// JSON pvesh would print, so an inventory cycle costs three pvesh runs
// whatever the number of guests. Paths naming another node are refused,
// because pvesh would proxy them over the network.
package proxmox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Defaults for Config.
const (
	DefaultPveshPath  = "/usr/bin/pvesh"
	DefaultPmxcfsRoot = "/etc/pve"
	DefaultTimeout    = 30 * time.Second
	DefaultOutputCap  = 16 << 20
)

// Sources named in ProxmoxGetResponse.
const (
	SourcePvesh  = "pvesh"
	SourcePmxcfs = "pmxcfs"
)

// Config says what the reader may read and how. The broker fills it from
// the policy's proxmox section.
type Config struct {
	// PveshPath is pvesh's absolute path.
	PveshPath string
	// PmxcfsRoot is where pmxcfs is mounted.
	PmxcfsRoot string
	// AllowedPaths are path patterns with {local} (the local node) and
	// {vmid} (a guest id); DefaultAllowedPaths if nil.
	AllowedPaths []string
	// Timeout bounds one pvesh run.
	Timeout time.Duration
	// OutputCap bounds pvesh's output and a config file's size, in bytes.
	OutputCap int
	// Hostname cross-checks pmxcfs's local node; os.Hostname if nil.
	Hostname func() (string, error)
	// Launcher starts pvesh; without one, reads through pvesh fail.
	Launcher Launcher
	// ChildMemory and ChildTasks cap pvesh's memory and tasks; zero takes
	// the launcher's defaults.
	ChildMemory int64
	ChildTasks  int
}

// Reader answers ProxmoxGet. It keeps no state between calls.
type Reader struct {
	cfg      Config
	patterns []pattern
}

// New checks cfg and fills in defaults.
func New(cfg Config) (*Reader, error) {
	if cfg.PveshPath == "" {
		cfg.PveshPath = DefaultPveshPath
	}
	if !filepath.IsAbs(cfg.PveshPath) {
		return nil, fmt.Errorf("pvesh path %q is not absolute", cfg.PveshPath)
	}
	cfg.PveshPath = filepath.Clean(cfg.PveshPath)
	if cfg.PmxcfsRoot == "" {
		cfg.PmxcfsRoot = DefaultPmxcfsRoot
	}
	if !filepath.IsAbs(cfg.PmxcfsRoot) {
		return nil, fmt.Errorf("pmxcfs root %q is not absolute", cfg.PmxcfsRoot)
	}
	cfg.PmxcfsRoot = filepath.Clean(cfg.PmxcfsRoot)
	if cfg.AllowedPaths == nil {
		cfg.AllowedPaths = DefaultAllowedPaths
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.OutputCap <= 0 {
		cfg.OutputCap = DefaultOutputCap
	}
	if cfg.Hostname == nil {
		cfg.Hostname = os.Hostname
	}
	r := &Reader{cfg: cfg}
	for _, raw := range cfg.AllowedPaths {
		p, err := parsePattern(raw)
		if err != nil {
			return nil, err
		}
		r.patterns = append(r.patterns, p)
	}
	return r, nil
}

// Get reads one API path. Errors are gRPC statuses: InvalidArgument for a
// malformed path, node name or vmid; PermissionDenied for a path the
// patterns do not allow, another node's path, or a config that resolves
// outside the local node's directory; FailedPrecondition when pmxcfs does
// not name a local node; NotFound for a missing config; DeadlineExceeded,
// ResourceExhausted or Unavailable when pvesh is slow, too verbose or fails.
func (r *Reader) Get(ctx context.Context, path string) (*brokerv1.ProxmoxGetResponse, error) {
	segs, err := splitPath(path, false)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "proxmox path %q: %v", path, err)
	}
	local, err := r.LocalNode()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "proxmox local node unknown: %v", err)
	}
	p, vmid, err := r.allow(segs, path, local)
	if err != nil {
		return nil, err
	}
	if p.guest != "" {
		data, err := r.readGuestConfig(local, p.guest, vmid)
		if err != nil {
			return nil, err
		}
		out, err := ParseGuestConfig(p.guest, data)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "parse %s %d config: %v", p.guest, vmid, err)
		}
		return &brokerv1.ProxmoxGetResponse{Json: out, Source: SourcePmxcfs}, nil
	}
	out, err := r.runPvesh(ctx, path)
	if err != nil {
		return nil, err
	}
	return &brokerv1.ProxmoxGetResponse{Json: out, Source: SourcePvesh}, nil
}

// allow finds the pattern path matches for the local node.
func (r *Reader) allow(segs []string, path, local string) (pattern, int, error) {
	verdict := noMatch
	for _, p := range r.patterns {
		m, vmid := matchPattern(p, segs, local)
		if m == matched {
			return p, vmid, nil
		}
		verdict = max(verdict, m)
	}
	switch verdict {
	case otherNode:
		return pattern{}, 0, status.Errorf(codes.PermissionDenied, "proxmox path %q names another node than the local node %q", path, local)
	case badSyntax:
		return pattern{}, 0, status.Errorf(codes.InvalidArgument, "proxmox path %q: malformed node name or vmid", path)
	default:
		return pattern{}, 0, status.Errorf(codes.PermissionDenied, "proxmox path %q is not allowed", path)
	}
}

// ErrNotProxmox is wrapped by Detect when pmxcfs names no local node.
var ErrNotProxmox = errors.New("not a proxmox node")

// Detect says whether this host is a Proxmox VE node (pmxcfs names a local
// node matching the hostname) and which; the broker's Probe can use it.
func (r *Reader) Detect() (string, error) {
	name, err := r.LocalNode()
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotProxmox, err)
	}
	return name, nil
}

// Source names where Get would read path from: SourcePmxcfs for a guest
// config, SourcePvesh otherwise. It judges nothing; the decision log uses
// it to name the program.
func (r *Reader) Source(path string) string {
	segs, err := splitPath(path, false)
	if err != nil || len(segs) != 5 || segs[0] != "nodes" || segs[4] != "config" {
		return SourcePvesh
	}
	for _, p := range r.patterns {
		if p.guest != "" && p.segs[2] == segs[2] {
			return SourcePmxcfs
		}
	}
	return SourcePvesh
}

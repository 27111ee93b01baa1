// Package policy loads and evaluates the broker's allowlist policy: which
// commands, traces, Proxmox reads, patches and reboots the broker may perform
// as root. Everything not named is denied.
package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Origin says where a policy file comes from.
type Origin string

const (
	// OriginVendor is the packaged default, replaced on upgrade.
	OriginVendor Origin = "vendor"
	// OriginLocal is an administrator's file in policy.d.
	OriginLocal Origin = "local"
)

// File is one loaded policy file.
type File struct {
	Path   string
	SHA256 string
	Origin Origin
}

// LoadOptions controls how strictly files are checked on disk.
type LoadOptions struct {
	// RequireRootOwned refuses files that are not owned by root or that are
	// writable by group or other. The broker always sets it.
	RequireRootOwned bool
	// WorkerAccount is the worker's account; no rule may run as it.
	WorkerAccount string
}

// Policy is a merged, validated policy.
type Policy struct {
	files  []File
	sha256 string
	counts map[string]int
}

// document is the file schema. Sections are filled in by later work.
type document struct {
	Version   int         `yaml:"version"`
	Commands  []yaml.Node `yaml:"commands"`
	Traces    yaml.Node   `yaml:"traces"`
	Proxmox   yaml.Node   `yaml:"proxmox"`
	Patches   yaml.Node   `yaml:"patches"`
	Reboots   yaml.Node   `yaml:"reboots"`
	Metrics   yaml.Node   `yaml:"metrics"`
	Limits    yaml.Node   `yaml:"limits"`
	DenyPaths []yaml.Node `yaml:"deny_paths"`
}

// Load reads the vendor file and then each local file, in the order given,
// and merges them.
func Load(opts LoadOptions, vendor string, locals ...string) (*Policy, error) {
	p := &Policy{counts: map[string]int{}}
	paths := append([]string{vendor}, locals...)
	for i, path := range paths {
		origin := OriginLocal
		if i == 0 {
			origin = OriginVendor
		}
		f, doc, err := loadFile(opts, path, origin)
		if err != nil {
			return nil, err
		}
		p.files = append(p.files, f)
		p.counts["commands"] += len(doc.Commands)
		p.counts["deny_paths"] += len(doc.DenyPaths)
	}
	p.sha256 = mergedSHA256(p.files)
	return p, nil
}

func loadFile(opts LoadOptions, path string, origin Origin) (File, document, error) {
	if opts.RequireRootOwned {
		if err := CheckOwnership(path); err != nil {
			return File{}, document{}, err
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return File{}, document{}, fmt.Errorf("read policy %s: %w", path, err)
	}
	var doc document
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return File{}, document{}, fmt.Errorf("policy %s: %w", path, err)
	}
	if doc.Version != 1 {
		return File{}, document{}, fmt.Errorf("policy %s: version %d is not supported (want 1)", path, doc.Version)
	}
	sum := sha256.Sum256(data)
	return File{Path: path, SHA256: hex.EncodeToString(sum[:]), Origin: origin}, doc, nil
}

// CheckOwnership refuses a file that is not a regular file owned by root or
// that group or other may write.
func CheckOwnership(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("policy %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("policy %s: not a regular file", path)
	}
	if uid, ok := ownerUID(fi); !ok || uid != 0 {
		return fmt.Errorf("policy %s: owned by uid %d, must be owned by root", path, uid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("policy %s: mode %04o is writable by group or other", path, fi.Mode().Perm())
	}
	return nil
}

func mergedSHA256(files []File) string {
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "%s %s\n", f.Origin, f.SHA256)
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:])
}

// SHA256 identifies the merged policy: a hash over each file's hash in order.
func (p *Policy) SHA256() string { return p.sha256 }

// Files lists the loaded files in merge order.
func (p *Policy) Files() []File { return append([]File(nil), p.files...) }

// RuleCounts counts the rules in each section.
func (p *Policy) RuleCounts() map[string]int {
	out := make(map[string]int, len(p.counts))
	keys := make([]string, 0, len(p.counts))
	for k := range p.counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out[k] = p.counts[k]
	}
	return out
}

// LoadInstalled loads the vendor file and then every *.yaml in localDir in
// lexical order. A missing localDir means no local files.
func LoadInstalled(opts LoadOptions, vendor, localDir string) (*Policy, error) {
	locals, err := filepath.Glob(filepath.Join(localDir, "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("list local policies in %s: %w", localDir, err)
	}
	sort.Strings(locals)
	return Load(opts, vendor, locals...)
}

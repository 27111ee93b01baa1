// Package repo finds the module's checkout and the fixtures it holds for
// tests. Tests read only files inside the checkout, so a lone clone runs
// them.
package repo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Root walks up from the working directory to go.mod.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// ProxmoxFixtureDir is test/testdata/proxmox, the captured pvesh outputs,
// kept byte for byte as captured: some start with the shell command that
// produced them.
func ProxmoxFixtureDir() (string, error) {
	root, err := Root()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "test", "testdata", "proxmox"), nil
}

// ProxmoxFixture reads a captured pvesh output from ProxmoxFixtureDir,
// dropping a first line that is the shell command it came from.
func ProxmoxFixture(name string) ([]byte, error) {
	dir, err := ProxmoxFixtureDir()
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("proxmox fixture: %w", err)
	}
	if first, rest, ok := bytes.Cut(data, []byte("\n")); ok && !startsJSON(first) {
		data = rest
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("fixture %s is not JSON after stripping the command line", name)
	}
	return data, nil
}

func startsJSON(line []byte) bool {
	line = bytes.TrimSpace(line)
	return bytes.HasPrefix(line, []byte("{")) || bytes.HasPrefix(line, []byte("["))
}

// Package repo finds the module's checkout and the shared material beside it
// (../shared from the project root, as CI provides it) for tests.
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

// ProxmoxFixture reads a shared pvesh output from ../shared/fixtures/proxmox,
// dropping a first line that is the shell command it came from.
func ProxmoxFixture(name string) ([]byte, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(root, "..", "shared", "fixtures", "proxmox", name))
	if err != nil {
		return nil, err
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

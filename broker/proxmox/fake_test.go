package proxmox

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/test/repo"
)

// fixture reads a shared pvesh fixture without its shell-command first line.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := repo.ProxmoxFixture(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// fakePVE is a fake pmxcfs tree and a fake pvesh in a temp dir.
type fakePVE struct {
	t         testing.TB
	dir       string
	root      string // pmxcfs root
	node      string
	pvesh     string
	responses string
	argvLog   string
}

const pveshScript = `#!/bin/sh
# Fake pvesh: records how it was run, serves canned JSON per API path.
printf '%%s\n' "$*" >> '%[1]s/argv.log'
env > '%[1]s/env.log'
pwd > '%[1]s/cwd.log'
readlink /proc/self/fd/0 > '%[1]s/stdin.log'
if [ $# -ne 4 ] || [ "$1" != get ] || [ "$3" != --output-format ] || [ "$4" != json ]; then
	echo "fake pvesh: unexpected argv: $*" >&2
	exit 2
fi
f='%[1]s/responses'"$2"'.json'
if [ -f "$f" ]; then
	cat "$f"
else
	echo "No '$2' handler" >&2
	exit 2
fi
`

func newFakePVE(t testing.TB, node string) *fakePVE {
	t.Helper()
	dir := t.TempDir()
	f := &fakePVE{
		t: t, dir: dir, node: node,
		root:      filepath.Join(dir, "pve"),
		pvesh:     filepath.Join(dir, "bin", "pvesh"),
		responses: filepath.Join(dir, "responses"),
		argvLog:   filepath.Join(dir, "argv.log"),
	}
	for _, d := range []string{"bin", "responses", "pve/priv", "pve/nodes/" + node + "/lxc", "pve/nodes/" + node + "/qemu-server", "pve/nodes/node1/lxc", "pve/nodes/node1/qemu-server"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The links pmxcfs itself provides.
	for link, target := range map[string]string{
		"local":       "nodes/" + node,
		"lxc":         "nodes/" + node + "/lxc",
		"qemu-server": "nodes/" + node + "/qemu-server",
	} {
		if err := os.Symlink(target, filepath.Join(f.root, link)); err != nil {
			t.Fatal(err)
		}
	}
	f.writeFile("pve/priv/authkey.key", "-----BEGIN PRIVATE KEY-----\nsecret\n")
	f.writeFile("pve/nodes/"+node+"/pve-ssl.key", "-----BEGIN PRIVATE KEY-----\nnode key\n")
	f.writeFile("pve/nodes/node1/lxc/100.conf", "hostname: other-node\nostype: debian\n")
	if err := os.WriteFile(f.pvesh, []byte(fmt.Sprintf(pveshScript, dir)), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakePVE) writeFile(rel, content string) {
	f.t.Helper()
	p := filepath.Join(f.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// respond makes the fake pvesh answer apiPath with body.
func (f *fakePVE) respond(apiPath string, body []byte) {
	f.writeFile(filepath.Join("responses", apiPath+".json"), string(body))
}

// serveFixtures answers the three cycle paths with the shared fixtures.
func (f *fakePVE) serveFixtures() {
	f.respond("/cluster/status", fixture(f.t, "cluster-status.out"))
	f.respond("/cluster/resources", fixture(f.t, "cluster-resources.out"))
	f.respond("/nodes/"+f.node+"/status", fixture(f.t, "node-config.out"))
}

func (f *fakePVE) writeConf(kind string, vmid int, content string) {
	f.writeFile(filepath.Join("pve", "nodes", f.node, guestDirs[kind], fmt.Sprintf("%d.conf", vmid)), content)
}

func (f *fakePVE) reader(mod func(*Config)) *Reader {
	f.t.Helper()
	cfg := Config{
		PveshPath:  f.pvesh,
		PmxcfsRoot: f.root,
		Hostname:   func() (string, error) { return f.node + ".example.internal", nil },
		Launcher:   testLauncher(f.t),
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// pveshCalls is how many times the fake pvesh ran.
func (f *fakePVE) pveshCalls() []string {
	data, err := os.ReadFile(f.argvLog)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	var calls []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		calls = append(calls, sc.Text())
	}
	return calls
}

// encodeText is Proxmox's encode_text: bytes outside 0x20-0x39 and
// 0x3b-0x7e (control characters, ':' and non-ASCII) become %XX.
func encodeText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c <= 0x39 || c >= 0x3b && c <= 0x7e {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// confFromJSON writes a guest config file the way Proxmox does from a
// pvesh config object: the description as "#" lines first, then the keys.
func confFromJSON(t testing.TB, data []byte) string {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal(data, &obj); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if d, ok := obj["description"].(string); ok {
		for _, line := range strings.Split(strings.TrimSuffix(d, "\n"), "\n") {
			b.WriteString("#" + encodeText(line) + "\n")
		}
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		if k != "description" && k != "digest" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := obj[k].(type) {
		case string:
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		case float64:
			fmt.Fprintf(&b, "%s: %v\n", k, v)
		default:
			t.Fatalf("key %s: unexpected %T", k, v)
		}
	}
	return b.String()
}

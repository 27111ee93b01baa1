package proxmox

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Guest kinds, as they appear in API paths.
const (
	KindLXC  = "lxc"
	KindQEMU = "qemu"
)

// numericKeys are the config keys whose schema type is integer, number or
// boolean: pvesh prints them as JSON numbers (booleans as 0/1). Everything
// else is a string, as pvesh prints it.
var numericKeys = map[string]map[string]bool{
	KindLXC: set("console", "cores", "cpulimit", "cpuunits", "debug", "memory", "onboot",
		"protection", "swap", "template", "tty", "unprivileged"),
	KindQEMU: set("acpi", "autostart", "balloon", "cores", "cpulimit", "cpuunits", "freeze",
		"kvm", "localtime", "memory", "migrate_downtime", "migrate_speed", "numa", "onboot",
		"protection", "reboot", "shares", "sockets", "tablet", "template", "vcpus"),
}

func set(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

var (
	// keyLine is a "key: value" line of a guest config.
	keyLine = regexp.MustCompile(`^([a-z][a-z_]*\d*):\s*(.*?)\s*$`)
	// rawLXCLine is a raw LXC option ("lxc.cgroup2.devices.allow: c 10:200 rwm"
	// or with "="), which pvesh returns as the list "lxc": [[key, value], ...].
	rawLXCLine = regexp.MustCompile(`^(lxc\.[a-z0-9_\-.]+)(?::|\s*=)\s*(.*?)\s*$`)
	// sectionLine starts a snapshot, [PENDING] or [special:…] section.
	sectionLine = regexp.MustCompile(`^\[[^\]]*\]\s*$`)
	intValue    = regexp.MustCompile(`^-?[0-9]{1,18}$`)
	floatValue  = regexp.MustCompile(`^-?[0-9]{1,18}(\.[0-9]{1,18})?$`)
)

// ParseGuestConfig turns a pmxcfs guest config (<vmid>.conf) into the JSON
// object `pvesh get /nodes/<node>/{lxc|qemu}/<vmid>/config` prints for the
// current configuration: "key: value" lines, the description kept as
// "#"-prefixed, percent-encoded lines, raw "lxc.*" keys as a list of pairs,
// everything after the first [section] (snapshots, pending changes)
// ignored, numbers typed as the schema types them, and the digest (SHA-1 of
// the file, as Proxmox computes it). Lines it cannot read are skipped, as
// Proxmox skips them with a warning; invalid UTF-8 in values becomes U+FFFD.
func ParseGuestConfig(kind string, data []byte) ([]byte, error) {
	nums, ok := numericKeys[kind]
	if !ok {
		return nil, fmt.Errorf("unknown guest kind %q", kind)
	}
	conf := map[string]any{}
	var descr strings.Builder
	hasDescr := false
	var raw [][2]string
	for line := range bytes.Lines(data) {
		text := strings.TrimRight(string(line), "\r\n")
		if sectionLine.MatchString(text) {
			break
		}
		if rest, ok := strings.CutPrefix(text, "#"); ok {
			descr.WriteString(decodeComment(rest))
			descr.WriteByte('\n')
			hasDescr = true
			continue
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		if kind == KindLXC {
			if m := rawLXCLine.FindStringSubmatch(text); m != nil {
				raw = append(raw, [2]string{m[1], m[2]})
				continue
			}
		}
		m := keyLine.FindStringSubmatch(text)
		if m == nil || m[2] == "" || m[1] == "digest" || m[1] == "lxc" {
			continue
		}
		conf[m[1]] = typedValue(m[2], nums[m[1]])
	}
	if hasDescr {
		conf["description"] = descr.String()
	}
	if len(raw) > 0 {
		conf["lxc"] = raw
	}
	sum := sha1.Sum(data)
	conf["digest"] = hex.EncodeToString(sum[:])
	return json.Marshal(conf)
}

// decodeComment undoes Proxmox's encode_text (control characters, ':' and
// non-ASCII bytes written as %XX) the way its decode_text does: every valid
// %XX is decoded, anything else is kept as written, and invalid UTF-8
// becomes U+FFFD.
func decodeComment(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return strings.ToValidUTF8(b.String(), "\uFFFD")
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	default:
		return c - '0'
	}
}

func typedValue(v string, numeric bool) any {
	if !numeric {
		return v
	}
	if intValue.MatchString(v) {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	}
	if floatValue.MatchString(v) {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return json.Number(strconv.FormatFloat(f, 'f', -1, 64))
		}
	}
	return v
}

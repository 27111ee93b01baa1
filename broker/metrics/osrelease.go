package metrics

import (
	"errors"
	"strings"
)

// OSRelease is the part of os-release(5) the collector reports.
type OSRelease struct {
	ID         string
	IDLike     []string
	Name       string
	VersionID  string
	Version    string
	PrettyName string
}

// ParseOSRelease reads os-release(5) text: KEY=value lines, values optionally
// in single or double quotes with backslash escapes inside double quotes;
// comments and blank lines are ignored, malformed lines skipped. It fails
// only when no line was usable.
func ParseOSRelease(data []byte) (OSRelease, error) {
	var r OSRelease
	found := false
	sc := lines(data)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, raw, ok := strings.Cut(line, "=")
		if !ok || !validOSReleaseKey(key) {
			continue
		}
		val, ok := unquoteOSRelease(raw)
		if !ok {
			continue
		}
		found = true
		switch key {
		case "ID":
			r.ID = strings.ToLower(val)
		case "ID_LIKE":
			r.IDLike = strings.Fields(strings.ToLower(val))
		case "NAME":
			r.Name = val
		case "VERSION_ID":
			r.VersionID = val
		case "VERSION":
			r.Version = val
		case "PRETTY_NAME":
			r.PrettyName = val
		}
	}
	if err := sc.Err(); err != nil {
		return OSRelease{}, err
	}
	if !found {
		return OSRelease{}, errors.New("no KEY=value line")
	}
	return r, nil
}

func validOSReleaseKey(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// unquoteOSRelease undoes shell-style quoting as os-release(5) allows it.
func unquoteOSRelease(raw string) (string, bool) {
	if raw == "" {
		return "", true
	}
	switch q := raw[0]; q {
	case '"', '\'':
		if len(raw) < 2 || raw[len(raw)-1] != q {
			return "", false
		}
		inner := raw[1 : len(raw)-1]
		if q == '\'' {
			return inner, true
		}
		var b strings.Builder
		for i := 0; i < len(inner); i++ {
			if inner[i] == '\\' && i+1 < len(inner) && strings.IndexByte("\"\\$`", inner[i+1]) >= 0 {
				i++
			}
			b.WriteByte(inner[i])
		}
		return b.String(), true
	default:
		return raw, true
	}
}

// platformFamilies maps os-release IDs (and ID_LIKE words) to the families
// NannyAPI keys its patch scripts on: debian, rhel, suse, arch, alpine.
// Fedora goes to rhel because the rhel scripts use dnf, which Fedora has.
var platformFamilies = map[string]string{
	"debian": "debian", "ubuntu": "debian", "raspbian": "debian", "linuxmint": "debian",
	"pop": "debian", "elementary": "debian", "kali": "debian", "devuan": "debian",
	"zorin": "debian", "neon": "debian", "deepin": "debian", "pureos": "debian",
	"rhel": "rhel", "centos": "rhel", "fedora": "rhel", "rocky": "rhel",
	"almalinux": "rhel", "ol": "rhel", "amzn": "rhel", "scientific": "rhel",
	"cloudlinux": "rhel", "eurolinux": "rhel", "virtuozzo": "rhel", "navy": "rhel",
	"circle": "rhel", "anolis": "rhel", "openeuler": "rhel", "mariner": "rhel", "azurelinux": "rhel",
	"suse": "suse", "opensuse": "suse", "opensuse-leap": "suse", "opensuse-tumbleweed": "suse",
	"opensuse-microos": "suse", "sles": "suse", "sled": "suse", "sles_sap": "suse", "sle-micro": "suse",
	"arch": "arch", "archarm": "arch", "manjaro": "arch", "manjaro-arm": "arch", "endeavouros": "arch",
	"artix": "arch", "garuda": "arch", "cachyos": "arch",
	"alpine": "alpine", "postmarketos": "alpine",
	"gentoo": "gentoo", "nixos": "nixos", "void": "void", "slackware": "slackware",
	"clear-linux-os": "clear-linux-os", "solus": "solus", "photon": "photon",
}

// PlatformFamily maps ID, then each ID_LIKE word, to a family; "unknown"
// when nothing matches. It is never empty: NannyAPI refuses a heartbeat
// without one.
func (r OSRelease) PlatformFamily() string {
	if f, ok := platformFamilies[r.ID]; ok {
		return f
	}
	for _, like := range r.IDLike {
		if f, ok := platformFamilies[like]; ok {
			return f
		}
	}
	return "unknown"
}

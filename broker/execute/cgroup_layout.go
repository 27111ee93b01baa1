package execute

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
)

// v1Controllers are the cgroup v1 controllers a run uses when the host
// mounts them (a hybrid layout): memory for the memory cap, pids for the
// task cap.
var v1Controllers = []string{"memory", "pids"}

// cgroupLayout says where this process sits in each cgroup hierarchy that
// matters to a run. Paths are directories in the mounted hierarchies.
type cgroupLayout struct {
	// v2Self is this process's cgroup in the cgroup2 hierarchy; "" when
	// cgroup2 is not mounted.
	v2Self string
	// v2Mount is where cgroup2 is mounted.
	v2Mount string
	// v1Self maps a v1 controller to this process's cgroup in its hierarchy.
	v1Self map[string]string
}

// kind names the layout for reports.
func (l cgroupLayout) kind() string {
	switch {
	case l.v2Mount != "" && len(l.v1Self) > 0:
		return "hybrid"
	case l.v2Mount != "":
		return "unified"
	case len(l.v1Self) > 0:
		return "legacy"
	}
	return "none"
}

// mountEntry is one line of /proc/self/mountinfo, as far as needed here.
type mountEntry struct {
	root      string
	point     string
	fstype    string
	superOpts []string
}

// cgroupEntry is one line of /proc/self/cgroup.
type cgroupEntry struct {
	hierarchy   string
	controllers []string
	path        string
}

// detectLayout reads this process's mountinfo and cgroup membership.
func detectLayout() (cgroupLayout, error) {
	mf, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return cgroupLayout{}, fmt.Errorf("read mountinfo: %w", err)
	}
	defer mf.Close()
	mounts, err := parseMountinfo(mf)
	if err != nil {
		return cgroupLayout{}, err
	}
	cf, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return cgroupLayout{}, fmt.Errorf("read cgroup membership: %w", err)
	}
	defer cf.Close()
	member, err := parseProcCgroup(cf)
	if err != nil {
		return cgroupLayout{}, err
	}
	return layoutFrom(mounts, member), nil
}

// layoutFrom combines mounts and membership. A hierarchy whose mount root
// does not contain our cgroup (another cgroup namespace) is left out.
func layoutFrom(mounts []mountEntry, member []cgroupEntry) cgroupLayout {
	l := cgroupLayout{v1Self: map[string]string{}}
	for _, m := range mounts {
		switch m.fstype {
		case "cgroup2":
			if l.v2Mount != "" {
				continue
			}
			for _, e := range member {
				if e.hierarchy == "0" && len(e.controllers) == 0 {
					if dir, ok := within(m, e.path); ok {
						l.v2Mount, l.v2Self = m.point, dir
					}
				}
			}
		case "cgroup":
			for _, c := range v1Controllers {
				if !slices.Contains(m.superOpts, c) || l.v1Self[c] != "" {
					continue
				}
				for _, e := range member {
					if slices.Contains(e.controllers, c) {
						if dir, ok := within(m, e.path); ok {
							l.v1Self[c] = dir
						}
					}
				}
			}
		}
	}
	return l
}

// within maps a cgroup path onto the mount that shows it.
func within(m mountEntry, cgPath string) (string, bool) {
	if !strings.HasPrefix(cgPath, "/") || strings.Contains(cgPath, "/../") || strings.HasSuffix(cgPath, "/..") {
		return "", false
	}
	rel := cgPath
	if m.root != "/" {
		if cgPath != m.root && !strings.HasPrefix(cgPath, m.root+"/") {
			return "", false
		}
		rel = strings.TrimPrefix(cgPath, m.root)
	}
	return path.Join(m.point, rel), true
}

// parseMountinfo parses proc(5) mountinfo lines:
// id parent major:minor root point options [optional...] - fstype source superopts
func parseMountinfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		e, err := parseMountLine(line)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

func parseMountLine(line string) (mountEntry, error) {
	fields := strings.Fields(line)
	sep := slices.Index(fields, "-")
	if sep < 6 || len(fields) < sep+4 {
		return mountEntry{}, fmt.Errorf("malformed line %q", truncate(line, 80))
	}
	return mountEntry{
		root:      unescapeOctal(fields[3]),
		point:     unescapeOctal(fields[4]),
		fstype:    fields[sep+1],
		superOpts: strings.Split(fields[sep+3], ","),
	}, nil
}

// unescapeOctal undoes the kernel's \ooo escaping of spaces, tabs,
// newlines and backslashes in mountinfo paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// parseProcCgroup parses /proc/<pid>/cgroup: hierarchy:controllers:path.
func parseProcCgroup(r io.Reader) ([]cgroupEntry, error) {
	var out []cgroupEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("cgroup line %d: malformed %q", n, truncate(line, 80))
		}
		e := cgroupEntry{hierarchy: parts[0], path: parts[2]}
		if parts[1] != "" {
			e.controllers = strings.Split(parts[1], ",")
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read cgroup membership: %w", err)
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

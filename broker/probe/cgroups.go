package probe

import (
	"bufio"
	"os"
	"slices"
	"strings"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// detectCgroups reads mountinfo for a cgroup2 mount with cgroup.kill and for
// memory and pids controllers in either hierarchy.
func detectCgroups(mountinfo string) *brokerv1.CgroupInfo {
	info := &brokerv1.CgroupInfo{}
	f, err := os.Open(mountinfo)
	if err != nil {
		return info
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mountPoint, fstype, superOpts, ok := parseMountinfo(sc.Text())
		if !ok {
			continue
		}
		switch fstype {
		case "cgroup2":
			if info.V2Path == "" {
				info.V2Path = mountPoint
				_, err := os.Stat(mountPoint + "/cgroup.kill")
				info.V2Kill = err == nil
				ctrl, _ := os.ReadFile(mountPoint + "/cgroup.controllers")
				fields := strings.Fields(string(ctrl))
				info.MemoryController = info.MemoryController || slices.Contains(fields, "memory")
				info.PidsController = info.PidsController || slices.Contains(fields, "pids")
			}
		case "cgroup":
			opts := strings.Split(superOpts, ",")
			info.MemoryController = info.MemoryController || slices.Contains(opts, "memory")
			info.PidsController = info.PidsController || slices.Contains(opts, "pids")
		}
	}
	return info
}

// parseMountinfo splits one /proc/<pid>/mountinfo line: fields up to " - ",
// then fstype, source and super options.
func parseMountinfo(line string) (mountPoint, fstype, superOpts string, ok bool) {
	pre, post, found := strings.Cut(line, " - ")
	if !found {
		return "", "", "", false
	}
	preFields := strings.Fields(pre)
	postFields := strings.Fields(post)
	if len(preFields) < 5 || len(postFields) < 3 {
		return "", "", "", false
	}
	return preFields[4], postFields[0], postFields[2], true
}

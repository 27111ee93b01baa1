package proxmox

import (
	"fmt"
	"strings"
)

// driveBuses are qemu-server's disk buses in the order it scans them, with
// their slot counts.
var driveBuses = []struct {
	name  string
	slots int
}{{"ide", 4}, {"sata", 6}, {"scsi", 31}, {"virtio", 16}}

const maxNets = 32

// DefaultBootOrder is the boot order qemu-server uses for a config without a
// boot line: the first hard disk (the legacy bootdisk if it names one), the
// first CD-ROM, the first NIC, as "order=a;b;c"; LegacyBootOrder ("cdn")
// when the config has none of them.
func DefaultBootOrder(conf GuestConfig) string {
	var order []string
	disk := conf.Str("bootdisk")
	if disk == "" || !conf.Has(disk) || isCDROM(conf.Str(disk)) {
		disk = firstDrive(conf, false)
	}
	if disk != "" {
		order = append(order, disk)
	}
	if cd := firstDrive(conf, true); cd != "" {
		order = append(order, cd)
	}
	for i := range maxNets {
		if key := fmt.Sprintf("net%d", i); conf.Str(key) != "" {
			order = append(order, key)
			break
		}
	}
	if len(order) == 0 {
		return LegacyBootOrder
	}
	return "order=" + strings.Join(order, ";")
}

func firstDrive(conf GuestConfig, cdrom bool) string {
	for _, bus := range driveBuses {
		for i := range bus.slots {
			key := fmt.Sprintf("%s%d", bus.name, i)
			v := conf.Str(key)
			if v != "" && isCDROM(v) == cdrom {
				return key
			}
		}
	}
	return ""
}

// isCDROM reads a drive line: "media=cdrom" among its options, or the bare
// "cdrom" shorthand for the host's drive.
func isCDROM(v string) bool {
	if v == "cdrom" {
		return true
	}
	for _, opt := range strings.Split(v, ",") {
		if opt == "media=cdrom" {
			return true
		}
	}
	return false
}

package metrics

import (
	"bytes"
	"context"
	"os"
	"sort"
	"strconv"
	"strings"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// skippedBlockPrefixes are /sys/block entries that are not disks: loop and
// RAM devices, device-mapper volumes (LVM, crypt), ZFS zvols (one per VM
// disk on a Proxmox node), network block devices and optical/floppy drives.
var skippedBlockPrefixes = []string{"loop", "ram", "zram", "dm-", "zd", "nbd", "rbd", "sr", "fd", "md"}

// collectBlockDevices lists whole disks from <sys>/block with their size,
// model and serial. Partitions live below each disk and are not listed.
// Empty (size 0) devices, such as card readers without a card, are skipped.
func collectBlockDevices(_ context.Context, c *call, out *brokerv1.CollectMetricsResponse) error {
	entries, err := os.ReadDir(c.roots.sys("block"))
	if err != nil {
		return err
	}
	var list []*brokerv1.BlockDevice
	for _, e := range entries {
		name := e.Name()
		if skipBlockDevice(name) {
			continue
		}
		dev, ok := c.blockDevice(name)
		if ok {
			list = append(list, dev)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	out.BlockDevices = list
	return nil
}

func skipBlockDevice(name string) bool {
	for _, p := range skippedBlockPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	// eMMC boot and RPMB areas show up as separate block devices.
	return strings.Contains(name, "boot") || strings.Contains(name, "rpmb")
}

func (c *call) blockDevice(name string) (*brokerv1.BlockDevice, bool) {
	raw, err := readTrimmed(c.roots.sys("block", name, "size"))
	if err != nil {
		return nil, false
	}
	sectors, err := strconv.ParseUint(raw, 10, 64)
	if err != nil || sectors == 0 || sectors > 1<<54 {
		return nil, false
	}
	model, _ := readTrimmed(c.roots.sys("block", name, "device", "model"))
	return &brokerv1.BlockDevice{
		Name:      name,
		SizeBytes: sectors * 512, // sysfs counts 512-byte sectors whatever the device's block size
		Model:     printable(model),
		Serial:    printable(c.blockSerial(name)),
	}, true
}

// blockSerial tries, in order: the device's own serial attribute (NVMe,
// virtio, MMC), udev's database entry for the device, and SCSI VPD page 0x80.
func (c *call) blockSerial(name string) string {
	if s, err := readTrimmed(c.roots.sys("block", name, "device", "serial")); err == nil && s != "" {
		return s
	}
	if devnum, err := readTrimmed(c.roots.sys("block", name, "dev")); err == nil {
		if s := c.udevSerial(devnum); s != "" {
			return s
		}
	}
	if data, err := readFile(c.roots.sys("block", name, "device", "vpd_pg80")); err == nil && len(data) > 4 {
		// The page starts with a 4-byte header; the serial follows.
		return strings.TrimSpace(string(data[4:]))
	}
	return ""
}

// udevSerial reads ID_SERIAL_SHORT (or ID_SERIAL) from udev's database file
// for major:minor devnum.
func (c *call) udevSerial(devnum string) string {
	data, err := readFile(c.roots.run("udev", "data", "b"+devnum))
	if err != nil {
		return ""
	}
	var long string
	sc := lines(data)
	for sc.Scan() {
		line := sc.Bytes()
		if v, ok := bytes.CutPrefix(line, []byte("E:ID_SERIAL_SHORT=")); ok {
			return string(v)
		}
		if v, ok := bytes.CutPrefix(line, []byte("E:ID_SERIAL=")); ok {
			long = string(v)
		}
	}
	return long
}

// printable drops control and non-ASCII bytes that some firmware pads with.
func printable(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s))
}

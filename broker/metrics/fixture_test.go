package metrics

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHost is a procfs/sysfs/etc tree written for one test.
type fakeHost struct {
	t     *testing.T
	root  string
	roots Roots
	// mnt is a real directory that the fake mountinfo lists as an ext4 mount,
	// so statfs on it succeeds.
	mnt string
}

func newFakeHost(t *testing.T) *fakeHost {
	t.Helper()
	root := t.TempDir()
	h := &fakeHost{
		t:    t,
		root: root,
		roots: Roots{
			Proc:   filepath.Join(root, "proc"),
			Sys:    filepath.Join(root, "sys"),
			Etc:    filepath.Join(root, "etc"),
			Run:    filepath.Join(root, "run"),
			Dev:    filepath.Join(root, "dev"),
			UsrLib: filepath.Join(root, "usr", "lib"),
		},
		mnt: filepath.Join(root, "data"),
	}
	if err := os.MkdirAll(h.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	h.writeDefaults()
	return h
}

func (h *fakeHost) write(rel, content string) {
	h.t.Helper()
	p := filepath.Join(h.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *fakeHost) remove(rel string) {
	h.t.Helper()
	if err := os.RemoveAll(filepath.Join(h.root, rel)); err != nil {
		h.t.Fatal(err)
	}
}

func (h *fakeHost) mkdir(rel string) {
	h.t.Helper()
	if err := os.MkdirAll(filepath.Join(h.root, rel), 0o755); err != nil {
		h.t.Fatal(err)
	}
}

const fakeStat = `cpu  10000 200 3000 50000 400 50 60 70 80 0
cpu0 2500 50 750 12500 100 12 15 17 20 0
cpu1 2500 50 750 12500 100 12 15 17 20 0
cpu2 2500 50 750 12500 100 13 15 18 20 0
cpu3 2500 50 750 12500 100 13 15 18 20 0
intr 123456 1 2 3
ctxt 987654
btime 1700000000
processes 4242
procs_running 2
procs_blocked 0
softirq 1 2 3
`

const fakeMeminfo = `MemTotal:       16384000 kB
MemFree:         2048000 kB
MemAvailable:    8192000 kB
Buffers:          100000 kB
Cached:          4000000 kB
SwapCached:            0 kB
Active:          6000000 kB
Inactive:        3000000 kB
SwapTotal:       1024000 kB
SwapFree:         512000 kB
Shmem:             10000 kB
SReclaimable:     200000 kB
`

const fakeNetDev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 9999999     100    0    0    0     0          0         0  9999999     100    0    0    0     0       0          0
  eth0: 1000000    2000    0    0    0     0          0         0   500000    1500    0    0    0     0       0          0
 vmbr0: 3000000    4000    0    0    0     0          0         0   700000    1600    0    0    0     0       0          0
`

const fakeRoute = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
	"eth1\t00000000\t0102A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n" +
	"vmbr0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
	"vmbr0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"

const fakeOSRelease = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
ID=debian
`

func (h *fakeHost) mountinfo() string {
	return strings.Join([]string{
		"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro",
		"23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw",
		"24 22 0:22 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=1000k",
		fmt.Sprintf("25 22 8:2 / %s rw,relatime shared:2 - xfs /dev/sdb1 rw", h.mnt),
		fmt.Sprintf("26 22 8:2 /sub %s/bind rw,relatime shared:2 - xfs /dev/sdb1 rw", h.mnt),
		"27 22 0:50 / /mnt/nfs rw,relatime shared:3 - nfs4 server:/export rw",
		"28 22 0:51 / /rpool/data/subvol-100-disk-0 rw shared:4 - zfs rpool/data/subvol-100-disk-0 rw",
		"29 22 0:52 / /fuse rw shared:6 - fuse.sshfs user@host:/ rw",
	}, "\n") + "\n"
}

func (h *fakeHost) writeDefaults() {
	h.write("proc/stat", fakeStat)
	h.write("proc/meminfo", fakeMeminfo)
	h.write("proc/vmstat", "pswpin 1\npswpout 2\n")
	h.write("proc/loadavg", "0.50 1.25 2.00 3/456 7890\n")
	h.write("proc/uptime", "86400.55 300000.12\n")
	h.write("proc/net/dev", fakeNetDev)
	h.write("proc/net/route", fakeRoute)
	h.write("proc/filesystems", "nodev\tproc\nnodev\ttmpfs\n\text4\n\txfs\nnodev\tnfs4\nnodev\tzfs\n")
	h.write("proc/1/mountinfo", h.mountinfo())
	h.write("proc/sys/kernel/hostname", "pve-node3\n")
	h.write("proc/sys/kernel/osrelease", "6.8.12-17-pve\n")
	for _, pid := range []string{"1", "42", "1000", "31337"} {
		h.mkdir("proc/" + pid)
	}
	h.mkdir("proc/self")
	h.mkdir("proc/sys/fs")
	for i, sib := range []string{"0-1", "0-1", "2-3", "2-3"} {
		h.write(fmt.Sprintf("sys/devices/system/cpu/cpu%d/topology/core_cpus_list", i), sib+"\n")
	}
	// Disks: sda (serial from udev), nvme0n1 (serial attribute), vda (none),
	// and entries that must be skipped.
	h.write("sys/block/sda/size", "1953525168\n")
	h.write("sys/block/sda/dev", "8:0\n")
	h.write("sys/block/sda/device/model", "Samsung SSD 870 \n")
	h.write("run/udev/data/b8:0", "S:disk/by-id/ata-x\nE:ID_SERIAL=Samsung_SSD_870_S5XXNG0R\nE:ID_SERIAL_SHORT=S5XXNG0R\n")
	h.write("sys/block/nvme0n1/size", "2000409264\n")
	h.write("sys/block/nvme0n1/dev", "259:0\n")
	h.write("sys/block/nvme0n1/device/model", "WD Blue SN570\n")
	h.write("sys/block/nvme0n1/device/serial", "  22123X456789  \n")
	h.write("sys/block/vda/size", "67108864\n")
	h.write("sys/block/sdz/size", "0\n") // card reader without a card
	for _, skip := range []string{"loop0", "ram0", "zram0", "dm-0", "zd16", "nbd0", "sr0", "md127", "mmcblk0boot0"} {
		h.write("sys/block/"+skip+"/size", "1000\n")
	}
	h.write("etc/os-release", fakeOSRelease)
}

func (h *fakeHost) collector() *Collector {
	return New(Config{Roots: h.roots})
}

package metrics

import (
	"context"
	"errors"
	"fmt"
	"slices"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/shirou/gopsutil/v4/disk"
)

// realFilesystems are the on-disk filesystem types worth reporting. Network
// and FUSE filesystems are left out on purpose: statfs(2) on a dead NFS
// server or a stuck FUSE daemon blocks, and this collector must not.
var realFilesystems = map[string]bool{
	"ext2": true, "ext3": true, "ext4": true, "xfs": true, "btrfs": true,
	"zfs": true, "vfat": true, "msdos": true, "exfat": true, "ntfs": true,
	"ntfs3": true, "f2fs": true, "jfs": true, "reiserfs": true,
	"bcachefs": true, "nilfs2": true, "hfsplus": true, "ufs": true,
}

// collectFilesystems lists mounted real filesystems from <proc>/1/mountinfo
// (gopsutil; bind mounts skipped) with their device, type and usage. The root
// filesystem is always included, whatever its type (overlay in a container,
// for example), because the worker reports "/" as the disk. A mount whose
// statfs fails is left out and named in the error; the rest are kept.
func collectFilesystems(ctx context.Context, c *call, out *brokerv1.CollectMetricsResponse) error {
	parts, err := disk.PartitionsWithContext(ctx, true)
	if err != nil {
		return err
	}
	candidates := selectPartitions(parts)
	var (
		list []*brokerv1.Filesystem
		errs []error
	)
	for _, p := range candidates {
		if len(list) == c.maxFS {
			errs = append(errs, fmt.Errorf("more than %d filesystems, rest left out", c.maxFS))
			break
		}
		u, err := disk.UsageWithContext(ctx, p.Mountpoint)
		if err != nil {
			errs = append(errs, fmt.Errorf("statfs %s: %w", p.Mountpoint, err))
			continue
		}
		list = append(list, &brokerv1.Filesystem{
			Device:    p.Device,
			MountPath: p.Mountpoint,
			Fstype:    p.Fstype,
			Total:     u.Total,
			Used:      u.Used,
			Free:      u.Free,
		})
	}
	out.Filesystems = list
	return errors.Join(errs...)
}

// selectPartitions keeps real, non-bind filesystems and "/", one entry per
// mount point (the last mount on a path is the visible one), in mount order.
func selectPartitions(parts []disk.PartitionStat) []disk.PartitionStat {
	last := make(map[string]int, len(parts))
	for i, p := range parts {
		if p.Mountpoint == "/" || (realFilesystems[p.Fstype] && !slices.Contains(p.Opts, "bind")) {
			last[p.Mountpoint] = i
		}
	}
	keep := make([]disk.PartitionStat, 0, len(last))
	for i, p := range parts {
		if j, ok := last[p.Mountpoint]; ok && j == i {
			keep = append(keep, p)
		}
	}
	return keep
}

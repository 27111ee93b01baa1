package metrics

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"syscall"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"golang.org/x/sys/unix"
)

// ifaceAddrs is one interface and its addresses.
type ifaceAddrs struct {
	name  string
	index int
	up    bool
	loop  bool
	addrs []netip.Addr
}

// collectAddresses fills every non-loopback address, sorted (IPv4 and IPv6,
// link-local included, as the reference agent reports them), and the primary
// IP: the first IPv4 address of the default-route interface when that
// interface is up, else the first IPv4 address of any up interface. It asks
// the kernel with one link dump and one address dump (net.Interface.Addrs
// would dump every address once per interface, which a Proxmox node with a
// thousand tap and veth devices pays for quadratically).
func collectAddresses(_ context.Context, c *call, out *brokerv1.CollectMetricsResponse) error {
	ifaces, err := listInterfaces()
	if err != nil {
		return err
	}
	defIface := ""
	if data, err := readFile(c.roots.proc("net", "route")); err == nil {
		defIface = defaultRouteInterface(data)
	}
	out.Ips = allAddresses(ifaces)
	out.PrimaryIp = primaryAddress(ifaces, defIface)
	return nil
}

func listInterfaces() ([]ifaceAddrs, error) {
	links, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	byIndex := make(map[int]*ifaceAddrs, len(links))
	ifaces := make([]ifaceAddrs, len(links))
	for i, l := range links {
		ifaces[i] = ifaceAddrs{
			name:  l.Name,
			index: l.Index,
			up:    l.Flags&net.FlagUp != 0,
			loop:  l.Flags&net.FlagLoopback != 0,
		}
	}
	for i := range ifaces {
		byIndex[ifaces[i].index] = &ifaces[i]
	}
	if err := dumpAddresses(byIndex); err != nil {
		return nil, err
	}
	return ifaces, nil
}

// dumpAddresses asks rtnetlink for every address once and files them under
// their interface.
func dumpAddresses(byIndex map[int]*ifaceAddrs) error {
	rib, err := syscall.NetlinkRIB(syscall.RTM_GETADDR, syscall.AF_UNSPEC)
	if err != nil {
		return fmt.Errorf("netlink address dump: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(rib)
	if err != nil {
		return fmt.Errorf("parse netlink address dump: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWADDR || len(m.Data) < unix.SizeofIfAddrmsg {
			continue
		}
		index := int(uint32(m.Data[4]) | uint32(m.Data[5])<<8 | uint32(m.Data[6])<<16 | uint32(m.Data[7])<<24)
		iface, ok := byIndex[index]
		if !ok {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(&m)
		if err != nil {
			continue
		}
		if a, ok := pickAddress(attrs); ok {
			iface.addrs = append(iface.addrs, a)
		}
	}
	return nil
}

// pickAddress prefers IFA_LOCAL (the interface's own address on
// point-to-point links) over IFA_ADDRESS (the peer there).
func pickAddress(attrs []syscall.NetlinkRouteAttr) (netip.Addr, bool) {
	var addr netip.Addr
	found := false
	for _, a := range attrs {
		ip, ok := netip.AddrFromSlice(a.Value)
		if !ok {
			continue
		}
		switch a.Attr.Type {
		case unix.IFA_LOCAL:
			return ip.Unmap(), true
		case unix.IFA_ADDRESS:
			addr, found = ip.Unmap(), true
		}
	}
	return addr, found
}

func allAddresses(ifaces []ifaceAddrs) []string {
	var ips []string
	for _, i := range ifaces {
		if i.loop {
			continue
		}
		for _, a := range i.addrs {
			if a.IsLoopback() {
				continue
			}
			ips = append(ips, a.String())
		}
	}
	sort.Strings(ips)
	return ips
}

func primaryAddress(ifaces []ifaceAddrs, defIface string) string {
	firstV4 := func(i ifaceAddrs) string {
		if !i.up || i.loop {
			return ""
		}
		for _, a := range i.addrs {
			if a.Is4() && !a.IsLoopback() {
				return a.String()
			}
		}
		return ""
	}
	for _, i := range ifaces {
		if i.name == defIface {
			if ip := firstV4(i); ip != "" {
				return ip
			}
		}
	}
	for _, i := range ifaces {
		if ip := firstV4(i); ip != "" {
			return ip
		}
	}
	return ""
}

// defaultRouteInterface reads /proc/net/route and returns the interface of
// the up IPv4 default route with the lowest metric, or "".
func defaultRouteInterface(data []byte) string {
	best, bestMetric := "", uint64(1<<63)
	sc := lines(data)
	first := true
	for sc.Scan() {
		if first { // header line
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || flags&unix.RTF_UP == 0 {
			continue
		}
		metric, err := strconv.ParseUint(f[6], 10, 63)
		if err != nil {
			continue
		}
		if metric < bestMetric {
			best, bestMetric = f[0], metric
		}
	}
	return best
}

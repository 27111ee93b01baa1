package policy

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Transport is the transport section: who may reach the broker besides
// root and the worker's account on the unix socket.
type Transport struct {
	// VsockGuests are the VM guests allowed over AF_VSOCK. A guest is
	// served only from its context id and only once it proves, by mutual
	// TLS, one of the keys pinned for it.
	VsockGuests []VsockGuest `json:"vsock_guests"`
}

// VsockGuest is one VM guest allowed over vsock.
type VsockGuest struct {
	ID string `json:"id"`
	// CID is the guest's context id, assigned by the host
	// (-device vhost-vsock-pci,guest-cid=N); a guest cannot choose another.
	CID uint32 `json:"cid"`
	// Name is how the decision log and `nannyagent status` name the guest.
	Name string `json:"name"`
	// WorkerKeys are the pins ("sha256:" and 64 hex digits, the SHA-256 of
	// the public key's SubjectPublicKeyInfo) of the keys the guest's worker
	// may prove. Two during a rotation: add the new one, then remove the
	// old one.
	WorkerKeys []string `json:"worker_keys"`
}

// Guest context ids below this are not guests: 0 is the hypervisor, 1 the
// local (loopback) transport and 2 the host itself.
const minGuestCID = 3

// maxGuestCID excludes VMADDR_CID_ANY (-1U).
const maxGuestCID = 1<<32 - 2

const keyPinPrefix = "sha256:"

type guestItem struct {
	VsockGuest
	at       pos
	disabled bool
}

func (d *decoder) transportSection(doc *fileDoc, n *yaml.Node) {
	m, _ := d.mapping(n, "transport", "vsock_guests")
	if m == nil {
		return
	}
	gn, has := m["vsock_guests"]
	if !has {
		return
	}
	items, ok := d.seq(gn, "transport.vsock_guests")
	if !ok {
		return
	}
	for i, it := range items {
		if g := d.vsockGuest(it, fmt.Sprintf("transport.vsock_guests[%d]", i)); g != nil {
			doc.guests = append(doc.guests, g)
		}
	}
}

func (d *decoder) vsockGuest(it *yaml.Node, what string) *guestItem {
	rm, _ := d.mapping(it, what, "id", "cid", "name", "worker_keys")
	if rm == nil {
		return nil
	}
	id, ok := d.ruleID(rm, it, what)
	g := &guestItem{at: d.at(d.resolve(it))}
	g.ID = id
	if cn, has := rm["cid"]; has {
		if v, ok2 := d.integer(cn, what+".cid"); !ok2 {
			ok = false
		} else if v < minGuestCID || v > maxGuestCID {
			d.errorf(cn, "%s.cid: %d is not a guest context id (guests have %d to %d; 0, 1 and 2 are the hypervisor, loopback and the host)", what, v, minGuestCID, maxGuestCID)
			ok = false
		} else {
			g.CID = uint32(v)
		}
	} else {
		d.errorf(it, "%s: missing cid (the guest's context id, the N of guest-cid=N)", what)
		ok = false
	}
	if nn, has := rm["name"]; has {
		name, ok2 := d.str(nn, what+".name")
		if ok2 && !guestName(name) {
			d.errorf(nn, "%s.name: %q must be 1 to 64 letters, digits and - _ .", what, name)
			ok2 = false
		}
		ok = ok && ok2
		g.Name = name
	} else {
		d.errorf(it, "%s: missing name (how the decision log names the guest)", what)
		ok = false
	}
	if kn, has := rm["worker_keys"]; has {
		keys, ok2 := d.strs(kn, what+".worker_keys")
		for _, k := range keys {
			canon, err := canonicalKeyPin(k)
			switch {
			case err != nil:
				d.errorf(kn, "%s.worker_keys: %v", what, err)
				ok2 = false
			case slices.Contains(g.WorkerKeys, canon):
				d.errorf(kn, "%s.worker_keys: %s is listed twice", what, canon)
				ok2 = false
			default:
				g.WorkerKeys = append(g.WorkerKeys, canon)
			}
		}
		if ok2 && len(g.WorkerKeys) == 0 {
			d.errorf(kn, "%s.worker_keys: at least one key is needed", what)
			ok2 = false
		}
		ok = ok && ok2
	} else {
		d.errorf(it, "%s: missing worker_keys (the pins nannyagent-broker keygen prints)", what)
		ok = false
	}
	if !ok {
		return nil
	}
	return g
}

func guestName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(isAlnum(s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.') {
			return false
		}
	}
	return true
}

// canonicalKeyPin checks a pin's spelling and lower-cases its hex.
func canonicalKeyPin(s string) (string, error) {
	h, ok := strings.CutPrefix(s, keyPinPrefix)
	if !ok {
		return "", fmt.Errorf("%q must start with %q (nannyagent-broker keygen and pin print it)", s, keyPinPrefix)
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		return "", fmt.Errorf("%q: want %s and 64 hex digits", s, keyPinPrefix)
	}
	return keyPinPrefix + hex.EncodeToString(b), nil
}

// mergeGuests keeps the active guests and refuses two that share a
// context id or a key: a CID names one machine, and a key copied into two
// guests would let either pass for the other.
func (p *Policy) mergeGuests(items []*guestItem, errs *ErrorList) {
	byCID := map[uint32]*guestItem{}
	byKey := map[string]*guestItem{}
	for _, g := range items {
		if g.disabled {
			continue
		}
		if prev := byCID[g.CID]; prev != nil {
			errs.add(&Error{File: g.at.File, Line: g.at.Line, Msg: fmt.Sprintf("transport (%s): context id %d is already allowed by %s at %s", g.ID, g.CID, prev.ID, prev.at)})
			continue
		}
		clash := false
		for _, k := range g.WorkerKeys {
			if prev := byKey[k]; prev != nil {
				errs.add(&Error{File: g.at.File, Line: g.at.Line, Msg: fmt.Sprintf("transport (%s): key %s is also pinned for %s (context id %d) at %s; give each guest its own key", g.ID, k, prev.ID, prev.CID, prev.at)})
				clash = true
			}
		}
		if clash {
			continue
		}
		byCID[g.CID] = g
		for _, k := range g.WorkerKeys {
			byKey[k] = g
		}
		p.transport.VsockGuests = append(p.transport.VsockGuests, g.VsockGuest)
	}
}

// Transport is the merged transport section.
func (p *Policy) Transport() Transport {
	t := Transport{VsockGuests: make([]VsockGuest, 0, len(p.transport.VsockGuests))}
	for _, g := range p.transport.VsockGuests {
		g.WorkerKeys = slices.Clone(g.WorkerKeys)
		t.VsockGuests = append(t.VsockGuests, g)
	}
	return t
}

func (e Explanation) writeTransport(ew *errWriter) {
	ew.printf("\nTransport (who may reach the broker; root and the worker's account on the unix socket always may):\n")
	if len(e.Transport.VsockGuests) == 0 {
		ew.printf("  vsock guests: none (a vsock listener refuses every connection)\n")
		return
	}
	for _, g := range e.Transport.VsockGuests {
		ew.printf("  vsock guest %q, context id %d [rule %s]: served as the worker once it proves one of these keys by mutual TLS:\n", g.Name, g.CID, g.ID)
		for _, k := range g.WorkerKeys {
			ew.printf("    %s\n", k)
		}
	}
}

package localapi

import (
	"os/user"
	"strconv"
	"testing"

	"github.com/nannyai/nannyagent/ipc/peercred"
)

func TestAuthorize(t *testing.T) {
	g, err := user.LookupGroupId("0")
	if err != nil {
		t.Skip("no group 0 here")
	}
	gid, _ := strconv.ParseUint(g.Gid, 10, 32)
	admin := uint32(gid)
	tests := []struct {
		name  string
		group string
		peer  peercred.Peer
		allow bool
	}{
		{"root", g.Name, peercred.Peer{UID: 0, GID: 999}, true},
		{"primary group", g.Name, peercred.Peer{UID: 1000, GID: admin}, true},
		{"supplementary group", g.Name, peercred.Peer{UID: 1000, GID: 1000, Groups: []uint32{5, admin}}, true},
		{"stranger", g.Name, peercred.Peer{UID: 1000, GID: 1000, Groups: []uint32{5}}, false},
		{"unknown admin group", "no-such-group-xyz", peercred.Peer{UID: 1000, GID: admin}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Config{AdminGroup: tc.group})
			if err := s.authorize(tc.peer); (err == nil) != tc.allow {
				t.Errorf("authorize(%+v) = %v, want allow=%v", tc.peer, err, tc.allow)
			}
		})
	}
}

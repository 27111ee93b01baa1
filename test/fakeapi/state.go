package fakeapi

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Collection ids as the real backend names them.
const (
	collAgentsID        = "pbc_3549173383"
	collUsersID         = "_pb_users_auth_"
	collInvestigationID = "pbc_59972043"
	collPatchOpsID      = "pbc_2550880806"
	collRebootOpsID     = "pbc_3109392152"
	collScriptsID       = "pbc_1280174292"
)

type kind int

const (
	kindNone kind = iota
	kindUser
	kindAgent
)

// principal is who a request authenticates as.
type principal struct {
	kind   kind
	id     string
	userID string // the owner user (= id for a user)
}

type user struct {
	id    string
	token string
}

type agent struct {
	id             string
	userID         string
	host           map[string]any
	refreshToken   string
	refreshExpires time.Time
	lastSeen       time.Time
	created        time.Time
}

type accessToken struct {
	kind    kind
	id      string
	exp     time.Time
	revoked bool
}

type deviceCode struct {
	deviceCode string
	userCode   string
	userID     string
	authorized bool
	consumed   bool
	agentID    string
	expires    time.Time
}

type script struct {
	id      string
	family  string
	name    string
	file    string
	content []byte
	sha256  string
	// served, when set, is what a download gets instead of content (a
	// tampered copy; validate still gives content's sha256).
	served []byte
}

type fault struct {
	status      int
	body        string
	contentType string
	remaining   int // <= 0: until cleared
}

// state is everything the fake knows; guarded by Server.mu.
type state struct {
	users        map[string]*user
	defaultUser  string
	agents       map[string]*agent
	tokens       map[string]*accessToken
	staticTokens map[string]string // nsk_ token → user id
	deviceCodes  map[string]*deviceCode
	records      map[string]*collection
	scripts      map[string]*script
	files        map[string][]byte // "<collection>/<record>/<file>"
	pendingBoot  map[string]string // agent id → reboot id
	// rebootHistory is every status a reboot took, in order.
	rebootHistory map[string][]string
	proxmoxIDs    map[string]string // upsert key → record id
	rounds        map[string]int    // investigation id → proxy rounds

	clients map[string]*rtClient

	hits     map[string]int
	requests []Request
	faults   map[string]*fault
	slow     map[string]time.Duration

	metrics       []MetricsPost
	proxmox       []ProxmoxPost
	patchResults  []PatchResultPost
	invPatches    []InvestigationPatch
	patchPatches  []PatchStatusPost
	aiTurns       []AITurnRecord
	rebootFails   []RebootFailPost
	registrations []Registration
}

// collection keeps records in creation order.
type collection struct {
	name  string
	id    string
	order []string
	byID  map[string]map[string]any
}

func newState() state {
	st := state{
		users:         map[string]*user{},
		agents:        map[string]*agent{},
		tokens:        map[string]*accessToken{},
		staticTokens:  map[string]string{},
		deviceCodes:   map[string]*deviceCode{},
		records:       map[string]*collection{},
		scripts:       map[string]*script{},
		files:         map[string][]byte{},
		pendingBoot:   map[string]string{},
		rebootHistory: map[string][]string{},
		proxmoxIDs:    map[string]string{},
		rounds:        map[string]int{},
		clients:       map[string]*rtClient{},
		hits:          map[string]int{},
		faults:        map[string]*fault{},
		slow:          map[string]time.Duration{},
	}
	for _, c := range []struct{ name, id string }{{"investigations", collInvestigationID},
		{"patch_operations", collPatchOpsID}, {"reboot_operations", collRebootOpsID}} {
		st.records[c.name] = &collection{name: c.name, id: c.id, byID: map[string]map[string]any{}}
	}
	return st
}

func (c *collection) put(rec map[string]any) {
	id := rec["id"].(string)
	if _, ok := c.byID[id]; !ok {
		c.order = append(c.order, id)
	}
	c.byID[id] = rec
}

func (st *state) takeFault(route string) *fault {
	f, ok := st.faults[route]
	if !ok {
		return nil
	}
	if f.remaining > 0 {
		f.remaining--
		if f.remaining == 0 {
			delete(st.faults, route)
		}
	}
	cp := *f
	return &cp
}

// seed creates the default user and the seeded patch scripts.
func (s *Server) seed() {
	u := s.newUserLocked()
	s.st.defaultUser = u.id
	s.addScriptLocked("debian", "apt-update.sh", standInAptUpdate)
	for _, sc := range []struct{ family, name string }{
		{"rhel", "dnf-update.sh"}, {"arch", "pacman-update.sh"},
		{"suse", "zypper-update.sh"}, {"alpine", "apk-update.sh"},
	} {
		body := fmt.Sprintf("#!/bin/sh\n# fakeapi seeded %s script\nset -eu\necho \"%s $*\"\n", sc.family, sc.name)
		s.addScriptLocked(sc.family, sc.name, []byte(body))
	}
}

func (s *Server) newUserLocked() *user {
	u := &user{id: pbID()}
	u.token = s.issueTokenLocked(kindUser, u.id)
	s.st.users[u.id] = u
	return u
}

// issueTokenLocked makes a PocketBase-looking JWT for a user or agent.
func (s *Server) issueTokenLocked(k kind, id string) string {
	coll := collAgentsID
	if k == kindUser {
		coll = collUsersID
	}
	exp := s.now().Add(s.opts.AccessTokenTTL)
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	payload, _ := json.Marshal(map[string]any{"collectionId": coll, "exp": exp.Unix(), "id": id, "refreshable": true, "type": "auth"})
	sig := make([]byte, 32)
	_, _ = rand.Read(sig)
	tok := header + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sig)
	s.st.tokens[tok] = &accessToken{kind: k, id: id, exp: exp}
	return tok
}

// auth resolves the request's credentials. Like PocketBase, an invalid or
// expired token makes the request anonymous rather than failing it.
func (s *Server) authLocked(r *http.Request) principal {
	raw := strings.TrimSpace(r.Header.Get("Authorization"))
	if raw == "" {
		return principal{}
	}
	if len(raw) > 7 && strings.EqualFold(raw[:7], "bearer ") {
		raw = strings.TrimSpace(raw[7:])
	}
	if uid, ok := s.st.staticTokens[raw]; ok {
		a, ok := s.st.agents[r.Header.Get("X-Agent-ID")]
		if ok && a.userID == uid {
			return principal{kind: kindAgent, id: a.id, userID: uid}
		}
		return principal{}
	}
	t, ok := s.st.tokens[raw]
	if !ok || t.revoked || !s.now().Before(t.exp) {
		return principal{}
	}
	switch t.kind {
	case kindUser:
		return principal{kind: kindUser, id: t.id, userID: t.id}
	case kindAgent:
		if a, ok := s.st.agents[t.id]; ok {
			return principal{kind: kindAgent, id: a.id, userID: a.userID}
		}
	}
	return principal{}
}

// owns reports whether p may see rec (the list rule
// user_id = @request.auth.id || agent_id = @request.auth.id).
func (p principal) owns(rec map[string]any) bool {
	if p.kind == kindNone {
		return false
	}
	return rec["agent_id"] == p.id || rec["user_id"] == p.id
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func randomFrom(alphabet string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// pbID is a 15-character PocketBase record id.
func pbID() string { return randomFrom(idAlphabet, 15) }

func hex32() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func userCode() string { return randomFrom("ABCDEFGHJKLMNPQRSTUVWXYZ23456789", 8) }

func clientID() string {
	return randomFrom("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 40)
}

func uuid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// pbTime is PocketBase's record timestamp format, e.g. "2026-11-25 21:41:12.007Z".
func pbTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000Z") }

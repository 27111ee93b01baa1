package fakeapi

import (
	"encoding/json"
	"net/url"
	"testing"
)

func listRecords(t *testing.T, s *Server, collection, filter, token string) (int, map[string]any) {
	t.Helper()
	path := "/api/collections/" + collection + "/records"
	if filter != "" {
		path += "?filter=" + url.QueryEscape(filter)
	}
	code, body := send(t, s, rawReq{method: "GET", path: path, token: token})
	var m map[string]any
	if code == 200 {
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatal(err)
		}
	}
	return code, m
}

func itemIDs(m map[string]any) []string {
	var out []string
	for _, it := range m["items"].([]any) {
		out = append(out, it.(map[string]any)["id"].(string))
	}
	return out
}

func TestRecordsAPI(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	a := s.AddAgent("", "a", "debian")
	b := s.AddAgent("", "b", "rhel")
	otherUser, _ := s.NewUser()
	c := s.AddAgent(otherUser, "c", "debian")
	pa, _ := s.CreatePatch(a.ID, PatchSpec{Mode: "dry-run"})
	_, _ = s.CreatePatch(b.ID, PatchSpec{Mode: "dry-run"})
	_, _ = s.CreatePatch(c.ID, PatchSpec{Mode: "apply"})
	ra, _ := s.CreateReboot(a.ID, RebootSpec{Reason: "r"})
	_, _ = s.CreateReboot(c.ID, RebootSpec{Reason: "r"})

	cases := []struct {
		name, collection, filter, token string
		want                            []string
	}{
		{"own pending patches", "patch_operations", "status='pending'", a.AccessToken, []string{pa}},
		{"joined agent filter", "patch_operations", "status='pending' && agent_id='" + a.ID + "'", a.AccessToken, []string{pa}},
		{"another agent's id in the filter leaks nothing", "patch_operations", "agent_id='" + c.ID + "'", a.AccessToken, nil},
		{"sent reboots", "reboot_operations", `status="sent"`, a.AccessToken, []string{ra}},
		{"no filter", "reboot_operations", "", a.AccessToken, []string{ra}},
		{"garbage token is a guest", "patch_operations", "status='pending'", "garbage", nil},
		{"no token is a guest", "patch_operations", "", "", nil},
		{"parentheses and or", "patch_operations", "(status='done' || status='pending') && mode!='apply'", a.AccessToken, []string{pa}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, m := listRecords(t, s, tc.collection, tc.filter, tc.token)
			if code != 200 {
				t.Fatalf("status %d", code)
			}
			got := itemIDs(m)
			if len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) {
				t.Errorf("items %v, want %v", got, tc.want)
			}
			for _, k := range []string{"page", "perPage", "totalItems", "totalPages", "items"} {
				if _, ok := m[k]; !ok {
					t.Errorf("no %s in %v", k, m)
				}
			}
			if int(m["totalItems"].(float64)) != len(tc.want) {
				t.Errorf("totalItems %v", m["totalItems"])
			}
		})
	}
	if code, body := send(t, s, rawReq{method: "GET", path: "/api/collections/patch_operations/records?filter=" + url.QueryEscape("status ~ 'x'"), token: a.AccessToken}); code != 400 {
		t.Errorf("bad filter: %d %s", code, body)
	}
	if code, body := send(t, s, rawReq{method: "GET", path: "/api/collections/nope/records", token: a.AccessToken}); code != 404 ||
		body != `{"data":{},"message":"Missing collection context.","status":404}` {
		t.Errorf("unknown collection: %d %s", code, body)
	}
	if code, m := listRecords(t, s, "package_exceptions", "", a.AccessToken); code != 200 || m["totalItems"].(float64) != 0 {
		t.Errorf("package_exceptions: %d %v", code, m)
	}
}

func TestParseFilter(t *testing.T) {
	rec := map[string]any{"status": "pending", "agent_id": "abc", "exit_code": 0, "flag": true}
	cases := []struct {
		in      string
		match   bool
		wantErr bool
	}{
		{"", true, false},
		{"status='pending'", true, false},
		{`status = "pending"`, true, false},
		{"status='sent'", false, false},
		{"status='pending' && agent_id='abc'", true, false},
		{"status='pending' && agent_id='x'", false, false},
		{"status='sent' || agent_id='abc'", true, false},
		{"exit_code=0 && flag=true", true, false},
		{"status!='pending'", false, false},
		{"missing=null", true, false},
		{"(status='pending'", false, true},
		{"status='pending", false, true},
		{"status ~ 'p'", false, true},
		{"status='a' &&", false, true},
		{"= 'a'", false, true},
		{"status=bare", false, true},
	}
	for _, tc := range cases {
		f, err := ParseFilter(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if err == nil && f.Match(rec) != tc.match {
			t.Errorf("%q: match %v", tc.in, !tc.match)
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, seed := range []string{"status='pending'", "status='pending' && agent_id='6ybfg6bq7mxtjoj'", "(a='1' || b!=\"2\") && c=3", "((((", "a=null"} {
		f.Add(seed)
	}
	rec := map[string]any{"status": "pending", "a": "1"}
	f.Fuzz(func(t *testing.T, in string) {
		flt, err := ParseFilter(in)
		if err != nil {
			return
		}
		_ = flt.Match(rec)
	})
}

func BenchmarkParseFilter(b *testing.B) {
	rec := map[string]any{"status": "pending", "agent_id": "6ybfg6bq7mxtjoj"}
	b.ReportAllocs()
	for b.Loop() {
		f, err := ParseFilter("status='pending' && agent_id='6ybfg6bq7mxtjoj'")
		if err != nil || !f.Match(rec) {
			b.Fatal(err)
		}
	}
}

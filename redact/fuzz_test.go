package redact

import (
	"strings"
	"testing"
)

// plantedLabels put a secret (%s) where the input says it is one. Each must
// be redacted whatever text surrounds it.
var plantedLabels = []string{
	"password=%s",
	"PGPASSWORD=%s psql",
	`{"refresh_token":"%s"}`,
	`"api_key": "%s"`,
	"client_secret: %s",
	"Authorization: Bearer %s",
	"Authorization: Basic %s",
	"https://bob:%s@example.com/",
	"-----BEGIN OPENSSH PRIVATE KEY-----\n%s\n-----END OPENSSH PRIVATE KEY-----",
	"-----BEGIN RSA PRIVATE KEY-----\n%s",
	"root:$6$%s$%[1]s:19000:0:99999:7:::",
	"\tkey = AQ%s==",
	"sshpass -p %s ssh host",
	"mysql -uroot -p%s db",
	"curl -u bob:%s https://example.com/",
	"app --token %s",
	"nsk_%s",
	"ghp_%s",
	"<password>%s</password>",
	"requirepass %s",
	"machine h login bob password %s",
	"Client Secret: %s",
	`{\"token\":\"%s\"}`,
}

// midLineLabels are planted between two copies of the input on one line.
var midLineLabels = []string{
	" password=%s ",
	` "token": "%s" `,
	" Bearer %s ",
	" https://u:%s@h/ ",
	" --password=%s ",
	" eyJhbGciOiJIUzI1NiJ9.eyJ%s.c2ln ",
	" <secret>%s</secret> ",
	" 'Authorization: Basic %s' ",
	" ?x=1&access_token=%s&y=2 ",
}

// plantable turns fuzz bytes into a secret made of letters and digits, so
// it cannot change the structure around it.
func plantable(seed string) string {
	var b strings.Builder
	b.WriteString("Zq")
	for i := 0; i < len(seed) && b.Len() < 38; i++ {
		c := seed[i]
		if alnum[c] {
			b.WriteByte(c)
		}
	}
	b.WriteString("7x")
	if b.Len() < 20 {
		return ""
	}
	return b.String()
}

func FuzzString(f *testing.F) {
	f.Add("password=hunter2 user=bob", uint8(0), "abcdefghijklmnop0123")
	f.Add("-----BEGIN PRIVATE KEY-----\nAAAA", uint8(3), "Kx81kQpLmZ0aBcD9eF2g")
	f.Add(`{"token":"\"x`, uint8(7), "secretsecretsecret99")
	f.Add("Authorization: Digest x\n'Authorization: a", uint8(2), "01234567890123456789ab")
	f.Add("https://a:b@c/ ghp_0123456789abcdefghijABCDEFGHIJ012345", uint8(12), "q1w2e3r4t5y6u7i8o9p0")
	for _, text := range cleanCorpus(f) {
		f.Add(text, uint8(len(text)), "Kx81kQpLmZ0aBcD9eF2gH3")
	}
	f.Fuzz(func(t *testing.T, in string, label uint8, seed string) {
		out := String(in)
		if string(Bytes([]byte(in))) != out {
			t.Fatalf("String and Bytes disagree on %q", in)
		}
		if again := String(out); again != out {
			t.Fatalf("not idempotent:\n in    %q\n once  %q\n twice %q", in, out, again)
		}
		secret := plantable(seed)
		if secret == "" || strings.Contains(in, secret) {
			return
		}
		checkPlanted(t, in+"\n"+fmtLabel(plantedLabels[int(label)%len(plantedLabels)], secret)+"\n"+in, secret)
		checkPlanted(t, in+fmtLabel(midLineLabels[int(label)%len(midLineLabels)], secret)+in, secret)
	})
}

func fmtLabel(label, secret string) string {
	return strings.ReplaceAll(strings.ReplaceAll(label, "%[1]s", secret), "%s", secret)
}

func checkPlanted(t *testing.T, planted, secret string) {
	t.Helper()
	out := String(planted)
	if strings.Contains(out, secret) {
		t.Fatalf("labelled secret %q survived:\n in  %q\n out %q", secret, planted, out)
	}
	if again := String(out); again != out {
		t.Fatalf("not idempotent:\n in    %q\n once  %q\n twice %q", planted, out, again)
	}
}

func FuzzArgv(f *testing.F) {
	f.Add("sshpass", "-p", "hunter2", "ssh")
	f.Add("curl", "-u", "bob:pw", "https://a:b@h/")
	f.Add("mysql", "-phunter2", "--password", "db")
	f.Add("htpasswd", "-nb", "bob", "pw")
	f.Fuzz(func(t *testing.T, a, b, c, d string) {
		in := []string{a, b, c, d}
		out := Argv(in)
		if len(out) != len(in) {
			t.Fatalf("Argv changed the argument count: %q → %q", in, out)
		}
		again := Argv(out)
		for i := range out {
			if again[i] != out[i] {
				t.Fatalf("Argv not idempotent: %q → %q → %q", in, out, again)
			}
		}
	})
}

// TestPlantedSecretsInCorpus runs the fuzz property over the clean corpus:
// every label, planted into every file, loses its secret, and the rest of
// the file is untouched.
func TestPlantedSecretsInCorpus(t *testing.T) {
	const secret = "Kx81kQpLmZ0aBcD9eF2gH3"
	for path, text := range cleanCorpus(t) {
		for _, label := range plantedLabels {
			line := fmtLabel(label, secret)
			out := String(text + "\n" + line + "\n" + text)
			if strings.Contains(out, secret) {
				t.Errorf("%s: secret behind %q survived", path, label)
			}
			if !strings.HasPrefix(out, text+"\n") || !strings.HasSuffix(out, "\n"+text) {
				if !strings.HasPrefix(label, "-----BEGIN RSA") { // a BEGIN without END redacts to the end
					t.Errorf("%s: planting %q changed the surrounding text", path, label)
				}
			}
		}
		for _, label := range midLineLabels {
			if out := String(text + fmtLabel(label, secret) + text); strings.Contains(out, secret) {
				t.Errorf("%s: secret behind %q survived mid-line", path, label)
			}
		}
	}
}

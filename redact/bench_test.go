package redact

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// benchSize is the most command output the broker returns for one command.
const benchSize = 256 << 10

// realisticOutput repeats the clean corpus (ps, journalctl, ip, df, dpkg,
// apt, systemctl, dmesg, …) up to size bytes.
func realisticOutput(b *testing.B, size int) string {
	b.Helper()
	paths, err := filepath.Glob("testdata/clean/*")
	if err != nil || len(paths) == 0 {
		b.Fatalf("no clean corpus: %v", err)
	}
	sort.Strings(paths)
	var all strings.Builder
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		all.Write(data)
	}
	var out strings.Builder
	for out.Len() < size {
		out.WriteString(all.String())
	}
	return out.String()[:size]
}

// withSecrets plants a few secrets of different kinds in text.
func withSecrets(text string) string {
	secrets := []string{
		"\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJpZCI6IjZ5YmZnNmJxN214dGpvaiJ9.dBjJxyzABC\n",
		"\nDATABASE_URL=postgres://app:s3cr3t@db:5432/app\n",
		"\n{\"refresh_token\":\"0f9e8d7c6b5a49382716a5b4c3d2e1f0\",\"agent_id\":\"6ybfg6bq7mxtjoj\"}\n",
		"\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n",
		"\nroot 2311 0.0 0.0 sshpass -p hunter2 ssh backup@10.0.0.9\n",
		"\nPGPASSWORD=hunter2\n",
	}
	step := len(text) / (len(secrets) + 1)
	var b strings.Builder
	at := 0
	for i, s := range secrets {
		cut := (i + 1) * step
		cut += strings.IndexByte(text[cut:], '\n')
		b.WriteString(text[at:cut])
		b.WriteString(s)
		at = cut + 1
	}
	b.WriteString(text[at:])
	return b.String()
}

func BenchmarkBytesClean(b *testing.B) {
	in := []byte(realisticOutput(b, benchSize))
	if out := Bytes(in); &out[0] != &in[0] {
		b.Fatal("clean benchmark input is not clean")
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		Bytes(in)
	}
}

func BenchmarkStringClean(b *testing.B) {
	in := realisticOutput(b, benchSize)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		String(in)
	}
}

func BenchmarkBytesFewSecrets(b *testing.B) {
	in := []byte(withSecrets(realisticOutput(b, benchSize)))
	out := Bytes(in)
	for _, s := range []string{"hunter2", "s3cr3t", "0f9e8d7c6b5a49382716a5b4c3d2e1f0", "b3BlbnNzaC1rZXkt", "eyJpZCI6"} {
		if strings.Contains(string(out), s) {
			b.Fatalf("secret %q not redacted", s)
		}
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		Bytes(in)
	}
}

// BenchmarkBytesDense is a worst case: a short secret-labelled line after
// every few lines of output.
func BenchmarkBytesDense(b *testing.B) {
	text := realisticOutput(b, benchSize)
	var sb strings.Builder
	for i, line := range strings.SplitAfter(text, "\n") {
		sb.WriteString(line)
		if i%10 == 0 {
			sb.WriteString("password=hunter2 token: x Authorization: Bearer abcdefgh1234\n")
		}
	}
	in := []byte(sb.String())
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		Bytes(in)
	}
}

func BenchmarkArgv(b *testing.B) {
	argv := []string{"/usr/bin/journalctl", "-u", "postgresql@15-main", "--since", "1 hour ago", "--no-pager", "-n", "200"}
	b.ReportAllocs()
	for b.Loop() {
		Argv(argv)
	}
}

// BenchmarkAdversarial feeds inputs built to make a careless scanner
// quadratic; every case must stay near the clean throughput.
func BenchmarkAdversarial(b *testing.B) {
	cases := map[string]string{
		"jwt-like run":      strings.Repeat("eyJ-", benchSize/4),
		"sk run":            strings.Repeat("sk-a", benchSize/4),
		"empty secrets":     strings.Repeat("password=&", benchSize/10),
		"at signs":          "https://a:" + strings.Repeat("@", benchSize),
		"colons":            strings.Repeat("token:", benchSize/6),
		"quoted colons":     strings.Repeat(`"a":`, benchSize/4),
		"short options":     strings.Repeat("-p ", benchSize/3),
		"long options":      strings.Repeat("--token ", benchSize/8),
		"pem begins":        strings.Repeat("-----BEGIN X-----", benchSize/17),
		"private begins":    strings.Repeat("-----BEGIN PRIVATE KEY-----", benchSize/27),
		"crypt":             strings.Repeat(":$6$", benchSize/4),
		"bearer":            strings.Repeat("Bearer ", benchSize/7),
		"one long line kv":  strings.Repeat("a=b ", benchSize/4),
		"header mid-line":   strings.Repeat("authorization: ", benchSize/15),
		"phrase colons":     strings.Repeat("a b: ", benchSize/5),
		"newlines":          strings.Repeat("\n", benchSize),
		"dashes":            strings.Repeat("-", benchSize),
		"escaped quotes":    strings.Repeat(`\"`, benchSize/2),
		"quoted key values": strings.Repeat(`"token":"`, benchSize/9),
	}
	for name, in := range cases {
		b.Run(name, func(b *testing.B) {
			data := []byte(in)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				Bytes(data)
			}
		})
	}
}

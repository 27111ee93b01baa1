package nannyapi_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

func verbatimBody(b *testing.B, name string) []byte {
	b.Helper()
	for _, v := range loadVerbatim(b) {
		if v.Name == name {
			return []byte(v.Body)
		}
	}
	b.Fatalf("no verbatim %s", name)
	return nil
}

func BenchmarkDecodeChatCompletion(b *testing.B) {
	body := verbatimBody(b, "ai_turn")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := nannyapi.DecodeChatCompletion(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	body := verbatimBody(b, "event_patch_create")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := nannyapi.DecodeEvent("patch_operations", body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodePage100 decodes a records page of 100 patch operations.
func BenchmarkDecodePage100(b *testing.B) {
	one := verbatimBody(b, "page_patches")
	start := strings.Index(string(one), `"items":[`) + len(`"items":[`)
	item := string(one[start : strings.Index(string(one), `},{`)+1])
	items := make([]string, 100)
	for i := range items {
		items[i] = item
	}
	body := []byte(`{"page":1,"perPage":100,"totalItems":100,"totalPages":1,"items":[` + strings.Join(items, ",") + `]}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		p, err := nannyapi.DecodePage[nannyapi.PatchOperation]("patch_operations", body)
		if err != nil || len(p.Items) != 100 {
			b.Fatal(err)
		}
	}
}

// BenchmarkIngestMetrics is one metrics post against the in-process fake
// over loopback HTTP (keep-alive).
func BenchmarkIngestMetrics(b *testing.B) {
	s := newFake(b, fakeapi.Options{})
	ag := s.AddAgent("", "a", "debian")
	c := newClient(b, s.URL(), nannyapi.Config{}).WithCredentials(&bearer{token: ag.AccessToken})
	m := sampleMetrics()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.IngestMetrics(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

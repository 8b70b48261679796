package audit

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocsAuditFormat keeps docs/audit-format.md true: its worked example
// verifies with the key and head it states, its canonical bytes are the
// first entry's, and the hash and HMAC it quotes are that entry's.
func TestDocsAuditFormat(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "audit-format.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	block := func(lang string) string {
		_, rest, ok := strings.Cut(doc, "```"+lang+"\n")
		body, _, ok2 := strings.Cut(rest, "```")
		if !ok || !ok2 {
			t.Fatalf("docs/audit-format.md has no %s block", lang)
		}
		return body
	}
	find := func(re string) string {
		m := regexp.MustCompile(re).FindStringSubmatch(doc)
		if m == nil {
			t.Fatalf("docs/audit-format.md does not match %s", re)
		}
		return m[1]
	}
	key, err := ParseKey(find("With the key `([0-9a-f]{64})`"))
	if err != nil {
		t.Fatal(err)
	}
	head, err := ParseHead(find("Its head is `([0-9]+:[0-9a-f]{64})`"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := VerifyExport(strings.NewReader(block("jsonl")), VerifyOptions{Key: key, ExpectHead: &head})
	if err != nil || res.Head != head || res.Entries != 2 {
		t.Fatalf("the documented export: %+v, %v; want 2 entries verified to %v", res, err, head)
	}
	var first Entry
	for e, err := range ReadJSONL(strings.NewReader(block("jsonl"))) {
		if err != nil {
			t.Fatal(err)
		}
		first = e
		break
	}
	if got, want := strings.TrimSpace(block("text")), string(first.Canonical()); got != want {
		t.Errorf("documented canonical bytes:\n%s\nwant\n%s", got, want)
	}
	if find("has the hash\n?\\s*`([0-9a-f]{64})`") != first.Hash() || find("HMAC `([0-9a-f]{64})`") != first.HMAC {
		t.Error("the documented hash or HMAC is not the first entry's")
	}
}

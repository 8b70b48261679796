package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// memStore is an in-memory KeyStore with Vault's KV v2 check-and-set
// rules. beforePut, when set, runs before each Put takes effect: a test
// uses it to let another process win a race.
type memStore struct {
	mu        sync.Mutex
	data      map[string]map[string]string
	version   map[string]int
	getErr    error
	putErr    error
	beforePut func()
	gets      atomic.Int32
	puts      atomic.Int32
}

var errCAS = errors.New("check-and-set version mismatch")

func newMemStore() *memStore {
	return &memStore{data: map[string]map[string]string{}, version: map[string]int{}}
}

func (m *memStore) Get(_ context.Context, path string) (map[string]string, int, error) {
	m.gets.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.getErr != nil {
		return nil, 0, m.getErr
	}
	d, ok := m.data[path]
	if !ok {
		return nil, 0, fmt.Errorf("read secret/%s: %w", path, fs.ErrNotExist)
	}
	return d, m.version[path], nil
}

func (m *memStore) Put(_ context.Context, path string, data map[string]string, cas int) (int, error) {
	m.puts.Add(1)
	if m.beforePut != nil {
		m.beforePut()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.putErr != nil {
		return 0, m.putErr
	}
	if cas >= 0 && cas != m.version[path] {
		return 0, fmt.Errorf("write secret/%s: %w", path, errCAS)
	}
	m.data[path] = data
	m.version[path]++
	return m.version[path], nil
}

func (m *memStore) set(path string, data map[string]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data[path] = data
	m.version[path]++
}

func TestLoadKey(t *testing.T) {
	ctx := context.Background()

	t.Run("creates the key on first use and reads it after", func(t *testing.T) {
		st := newMemStore()
		k, err := LoadKey(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		stored := st.data[KeyPath]["key"]
		if len(stored) != 2*KeySize || stored != k.Hex() || st.version[KeyPath] != 1 {
			t.Fatalf("stored %q (version %d), want the %d-byte key in hex at version 1", stored, st.version[KeyPath], KeySize)
		}
		again, err := LoadKey(ctx, st)
		if err != nil || !again.Equal(k) {
			t.Fatalf("second LoadKey: equal %v, %v", again.Equal(k), err)
		}
		if st.version[KeyPath] != 1 {
			t.Errorf("the second LoadKey wrote version %d", st.version[KeyPath])
		}
	})
	t.Run("loses the race and reads the winner's key", func(t *testing.T) {
		st := newMemStore()
		winner, _ := GenerateKey()
		st.beforePut = func() { st.set(KeyPath, map[string]string{"key": winner.Hex()}) }
		k, err := LoadKey(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if !k.Equal(winner) {
			t.Error("LoadKey kept its own key after losing the check-and-set race")
		}
		if st.version[KeyPath] != 1 {
			t.Errorf("version %d: the losing write went through", st.version[KeyPath])
		}
	})
	t.Run("concurrent first use agrees on one key", func(t *testing.T) {
		st := newMemStore()
		keys := make([]Key, 8)
		var wg sync.WaitGroup
		for i := range keys {
			wg.Go(func() {
				k, err := LoadKey(ctx, st)
				if err != nil {
					t.Error(err)
				}
				keys[i] = k
			})
		}
		wg.Wait()
		for i, k := range keys {
			if !k.Equal(keys[0]) {
				t.Errorf("LoadKey %d returned another key than LoadKey 0", i)
			}
		}
		if st.version[KeyPath] != 1 {
			t.Errorf("%d versions written, want 1", st.version[KeyPath])
		}
	})

	const stored = "not-a-key-but-secret-anyway-0123456789"
	tests := []struct {
		name  string
		setup func(*memStore)
		want  string
	}{
		{"no key field", func(m *memStore) { m.set(KeyPath, map[string]string{"value": stored}) }, `read audit key at rotatord/audit-key: the secret has no "key" field`},
		{"not hex", func(m *memStore) { m.set(KeyPath, map[string]string{"key": stored}) }, `read audit key at rotatord/audit-key: field "key" is not hex`},
		{"too short", func(m *memStore) { m.set(KeyPath, map[string]string{"key": "abcdef0123"}) }, "read audit key at rotatord/audit-key: audit key: 5 bytes, want at least 32"},
		{"read refused", func(m *memStore) { m.getErr = errors.New("permission denied") }, "read audit key at rotatord/audit-key: permission denied"},
		{"write refused", func(m *memStore) { m.putErr = errors.New("permission denied") }, "create audit key at rotatord/audit-key: permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemStore()
			tt.setup(st)
			_, err := LoadKey(ctx, st)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), stored) {
				t.Errorf("error quotes the stored value: %v", err)
			}
			if tt.name == "read refused" && st.puts.Load() != 0 {
				t.Error("LoadKey wrote a key although it could not read the path")
			}
		})
	}
}

func TestKeyCache_Key(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	st.getErr = errors.New("vault unreachable")
	c := &KeyCache{Store: st}
	if _, err := c.Key(ctx); err == nil {
		t.Fatal("Key with Vault down: no error")
	}
	st.mu.Lock()
	st.getErr = nil
	st.mu.Unlock()
	k, err := c.Key(ctx)
	if err != nil {
		t.Fatalf("Key after Vault came back: %v (a failure was cached)", err)
	}
	gets := st.gets.Load()
	for range 3 {
		if again, err := c.Key(ctx); err != nil || !again.Equal(k) {
			t.Fatalf("cached Key: %v", err)
		}
	}
	if st.gets.Load() != gets {
		t.Errorf("the cache read Vault %d more times", st.gets.Load()-gets)
	}
}

func TestParseKey(t *testing.T) {
	k := testKey(t)
	for _, text := range []string{
		k.Hex(), strings.ToUpper(k.Hex()), " " + k.Hex() + "\n",
		base64.StdEncoding.EncodeToString(k.b), base64.RawStdEncoding.EncodeToString(k.b),
		base64.URLEncoding.EncodeToString(k.b), base64.RawURLEncoding.EncodeToString(k.b),
	} {
		got, err := ParseKey(text)
		if err != nil || !got.Equal(k) {
			t.Errorf("ParseKey(%q): equal %v, %v", text, got.Equal(k), err)
		}
	}
	for text, want := range map[string]string{
		"abcd":                        "audit key: 2 bytes, want at least 32",
		"not a key, but private text": "audit key: neither hex nor base64",
	} {
		if _, err := ParseKey(text); err == nil || err.Error() != want {
			t.Errorf("ParseKey(%q) err = %v, want %q", text, err, want)
		}
	}
}

// TestKey_LeaksNothing: the key never shows in anything a log, an error,
// JSON, an export or a verification message could carry.
func TestKey_LeaksNothing(t *testing.T) {
	k := testKey(t)
	forms := map[string]string{
		"hex": k.Hex(), "HEX": strings.ToUpper(k.Hex()),
		"base64": base64.RawStdEncoding.EncodeToString(k.b), "base64url": base64.RawURLEncoding.EncodeToString(k.b),
		"bytes": fmt.Sprint(k.b), "raw": string(k.b),
	}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("loaded", "key", k, "in", struct{ K Key }{k})
	slog.New(slog.NewTextHandler(&logs, nil)).Info("loaded", "key", k)
	j, err := json.Marshal(map[string]any{"key": k, "nested": struct{ K Key }{k}})
	if err != nil {
		t.Fatal(err)
	}
	txt, _ := k.MarshalText()
	outputs := map[string]string{
		"fmt":        fmt.Sprintf("%s %v %+v %#v %x %X %d %q %T", k, k, k, k, k, k, k, k, k),
		"fmt struct": fmt.Sprintf("%+v %#v %x", struct{ K Key }{k}, struct{ K Key }{k}, []Key{k}),
		"error":      fmt.Errorf("load: %v", k).Error(),
		"slog":       logs.String(),
		"json":       string(j),
		"text":       string(txt),
	}

	// Exports and verification errors of a log MACed with the key.
	log := chain(t, 60, k)
	for _, format := range ExportFormats() {
		outputs["export "+format] = string(export(t, log, format))
	}
	log[3].Detail = "edited"
	_, verr := Verify(seqOf(log), VerifyOptions{Key: k})
	outputs["verify error"] = fmt.Sprint(verr)
	_, verr = Verify(seqOf(chain(t, 3, k)), VerifyOptions{Key: testKeyOther(t)})
	outputs["verify error, wrong key"] = fmt.Sprint(verr)

	for where, out := range outputs {
		for form, v := range forms {
			if strings.Contains(out, v) {
				t.Errorf("%s shows the key (%s form): %s", where, form, out)
			}
		}
	}
	if !strings.Contains(outputs["fmt"], redacted) || !strings.Contains(outputs["json"], redacted) || !strings.Contains(outputs["slog"], redacted) {
		t.Errorf("redaction marker missing: %v", outputs)
	}
	if hex.EncodeToString(k.b) != k.Hex() {
		t.Error("Hex does not return the key")
	}
}

func testKeyOther(t testing.TB) Key {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

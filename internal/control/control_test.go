package control

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type fakeBackend struct {
	rotated []RotateRequest
	fail    error
}

func (f *fakeBackend) Status(context.Context) (Status, error) {
	return Status{Version: "test", Policies: []PolicyStatus{{Name: "gpu", InFlight: true}}}, f.fail
}

func (f *fakeBackend) Rotate(_ context.Context, req RotateRequest) ([]RotateResult, error) {
	f.rotated = append(f.rotated, req)
	return []RotateResult{{Policy: "gpu", Rotated: true, KeyID: "k2"}}, f.fail
}

func (f *fakeBackend) Reload(context.Context) (ReloadResult, error) {
	return ReloadResult{}, f.fail
}

func (f *fakeBackend) Report(context.Context) (json.RawMessage, error) {
	return json.RawMessage(`{"keys":[]}`), f.fail
}

func (f *fakeBackend) Plan(context.Context) (json.RawMessage, error) {
	return json.RawMessage(`[{"Policy":"gpu"}]`), f.fail
}

// exportLines is what the fake's export writes.
const exportLines = "{\"seq\":1}\n{\"seq\":2}\n"

func (f *fakeBackend) AuditExport(_ context.Context, w io.Writer, req AuditExportRequest) error {
	if _, err := io.WriteString(w, exportLines); err != nil {
		return err
	}
	if req.Format == "broken" {
		return errors.New("state read failed at entry 3")
	}
	return f.fail
}

func (f *fakeBackend) AuditVerify(_ context.Context, req AuditVerifyRequest) (AuditVerifyResult, error) {
	return AuditVerifyResult{Entries: 2, Head: "2:abc", HeadChecked: req.ExpectHead != ""}, f.fail
}

// An export streams through untouched; one that fails half-way is an
// error at the client, and its trailer never reaches the output.
func TestClient_AuditExport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	srv, err := Listen(path, &fakeBackend{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	c := NewClient(path)
	var out strings.Builder
	if err := c.AuditExport(context.Background(), &out, AuditExportRequest{}); err != nil || out.String() != exportLines {
		t.Fatalf("export = %q, %v; want %q", out.String(), err, exportLines)
	}
	out.Reset()
	err = c.AuditExport(context.Background(), &out, AuditExportRequest{Format: "broken"})
	if err == nil || !strings.Contains(err.Error(), "state read failed at entry 3") {
		t.Fatalf("a failed export returned %v", err)
	}
	if strings.Contains(out.String(), "export failed") || !strings.HasPrefix(exportLines, out.String()) {
		t.Errorf("the failed export wrote %q", out.String())
	}
	res, err := c.AuditVerify(context.Background(), AuditVerifyRequest{ExpectHead: "2:abc"})
	if err != nil || res.Head != "2:abc" || !res.HeadChecked {
		t.Errorf("AuditVerify = %+v, %v", res, err)
	}
}

func TestServer_RoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "ctl.sock")
	b := &fakeBackend{}
	srv, err := Listen(path, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	c := NewClient(path)
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil || st.Version != "test" || !st.Policies[0].InFlight {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	res, err := c.Rotate(ctx, RotateRequest{Policies: []string{"gpu"}, Emergency: true})
	if err != nil || len(res) != 1 || res[0].KeyID != "k2" {
		t.Fatalf("Rotate = %+v, %v", res, err)
	}
	if len(b.rotated) != 1 || !b.rotated[0].Emergency || b.rotated[0].Policies[0] != "gpu" {
		t.Fatalf("backend saw %+v", b.rotated)
	}
	if raw, err := c.Report(ctx); err != nil || string(raw) != `{"keys":[]}` {
		t.Fatalf("Report = %s, %v", raw, err)
	}
	if raw, err := c.Plan(ctx); err != nil || string(raw) != `[{"Policy":"gpu"}]` {
		t.Fatalf("Plan = %s, %v", raw, err)
	}

	// Backend errors come back as the error text, not as a transport failure.
	b.fail = errors.New(`unknown policy "nope"`)
	if _, err := c.Reload(ctx); err == nil || err.Error() != `unknown policy "nope"` {
		t.Fatalf("Reload error = %v, want the backend's message", err)
	}

	if err := srv.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left after Close: %v", err)
	}
}

func TestClient_NoDaemon(t *testing.T) {
	dir := t.TempDir()
	// No socket at all.
	if _, err := NewClient(filepath.Join(dir, "absent.sock")).Status(context.Background()); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("missing socket: err = %v, want ErrNoDaemon", err)
	}
	// A stale socket file left by a killed daemon: nobody listens.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := NewClient(stale).Status(context.Background()); !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("stale socket: err = %v, want ErrNoDaemon", err)
	}
	// Listen replaces the stale socket.
	srv, err := Listen(stale, &fakeBackend{}, nil)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer srv.Close(context.Background())
	// ...but refuses to take over a live one.
	if _, err := Listen(stale, &fakeBackend{}, nil); err == nil || !strings.Contains(err.Error(), "another rotatord is listening") {
		t.Fatalf("second Listen on a live socket: err = %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := Wait(ctx, stale); err != nil {
		t.Fatalf("Wait on a live socket: %v", err)
	}
}

package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// Client talks to a daemon's control socket.
type Client struct {
	path string
	http *http.Client
}

var _ Backend = (*Client)(nil)

// NewClient returns a client for the socket at path. It does not connect.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	// No overall timeout: a rotation through the socket takes as long as
	// the providers do. Callers bound it with their context.
	return &Client{path: path, http: &http.Client{Transport: tr}}
}

// Dial returns a client for the socket at path when a daemon listens
// there, and an error wrapping ErrNoDaemon when none does (no socket, or a
// stale one left by a crash), so that a command can fall back to working
// in-process.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if isNoDaemon(err) {
			return nil, fmt.Errorf("%w on %s", ErrNoDaemon, path)
		}
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	_ = conn.Close()
	return NewClient(path), nil
}

// Status fetches the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	return st, c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
}

// Rotate asks the daemon to rotate now and waits for the results.
func (c *Client) Rotate(ctx context.Context, req RotateRequest) ([]RotateResult, error) {
	var res []RotateResult
	return res, c.do(ctx, http.MethodPost, "/v1/rotate", req, &res)
}

// Reload asks the daemon to re-read its config file.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var res ReloadResult
	return res, c.do(ctx, http.MethodPost, "/v1/reload", struct{}{}, &res)
}

// Report fetches the compliance report JSON.
func (c *Client) Report(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	return raw, c.do(ctx, http.MethodGet, "/v1/report", nil, &raw)
}

// AuditExport streams the daemon's audit log export to w.
func (c *Client) AuditExport(ctx context.Context, w io.Writer, req AuditExportRequest) error {
	resp, err := c.send(ctx, http.MethodPost, "/v1/audit/export", req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return answerError(resp)
	}
	// Lines are passed on one behind, so that a failure trailer (and the
	// line break put before it) never reaches w.
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	var held []byte
	for {
		line, err := r.ReadBytes('\n')
		if msg, failed := bytes.CutPrefix(line, []byte(exportFailed)); failed {
			return fmt.Errorf("audit export: %s", bytes.TrimSpace(msg))
		}
		if len(held) > 0 {
			if _, werr := w.Write(held); werr != nil {
				return werr
			}
		}
		held = append(held[:0], line...)
		if err == io.EOF {
			_, werr := w.Write(held)
			return werr
		}
		if err != nil {
			return fmt.Errorf("audit export: read answer: %w", err)
		}
	}
}

// AuditVerify asks the daemon to verify its live audit log.
func (c *Client) AuditVerify(ctx context.Context, req AuditVerifyRequest) (AuditVerifyResult, error) {
	var res AuditVerifyResult
	return res, c.do(ctx, http.MethodPost, "/v1/audit/verify", req, &res)
}

// Plan fetches the daemon's dry run as JSON.
func (c *Client) Plan(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	return raw, c.do(ctx, http.MethodGet, "/v1/plan", nil, &raw)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return answerError(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("control socket: read answer: %w", err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("control socket: decode answer: %w", err)
	}
	return nil
}

// send makes one request; the caller closes the body.
func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://rotatord"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if isNoDaemon(err) {
			return nil, fmt.Errorf("%w on %s", ErrNoDaemon, c.path)
		}
		return nil, fmt.Errorf("control socket %s: %w", c.path, err)
	}
	return resp, nil
}

// answerError turns an error answer into an error with its message.
func answerError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e errorBody
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return errors.New(e.Error)
	}
	return fmt.Errorf("control socket: HTTP %d", resp.StatusCode)
}

// isNoDaemon tells "nobody listens" (missing socket, refused) from other
// failures.
func isNoDaemon(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)
}

// Wait polls until a daemon answers on path or ctx ends (tests, scripts).
func Wait(ctx context.Context, path string) error {
	c := NewClient(path)
	for {
		if _, err := c.Status(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

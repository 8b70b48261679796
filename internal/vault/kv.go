package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/hashicorp/vault/api"
)

// NoCAS, passed as Put's cas, writes whatever version is current.
const NoCAS = -1

// Put writes data as a new version of path (relative to the mount, e.g.
// "ssh/sesterce/gpu-team") and returns that version. cas < 0 (NoCAS) writes
// unconditionally; cas == 0 only if nothing exists at path; cas == n only if
// the current version is n. A failed condition returns an error wrapping
// ErrCASMismatch.
//
// The request goes through vault/api (auth, namespace, TLS, retries); its
// answer is decoded here, for the one field needed, the version: the
// library's generic decoding (a Secret of interface values, then
// mapstructure) was half of the client's CPU per write (make
// bench-rotations).
func (s *Store) Put(ctx context.Context, path string, data map[string]string, cas int) (int, error) {
	full, err := s.fullPath("write", path)
	if err != nil {
		return 0, err
	}
	scrub := make([]string, 0, len(data))
	for _, v := range data {
		scrub = append(scrub, v)
	}
	req := kvWrite{Data: data}
	if cas >= 0 {
		req.Options = &kvOptions{CAS: cas}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return 0, &Error{Op: "write", Path: full, Detail: "encode request: " + err.Error()}
	}
	var v int
	err = s.renewedOnce(ctx, func() error {
		r := s.client.NewRequest(http.MethodPut, "/v1/"+s.mount+"/data/"+path)
		r.BodyBytes = body
		// Deprecated in favour of Logical().WriteRawWithContext, which
		// cancels the request's context when it returns, before the body
		// is read: the transport then drops the connection, and every
		// write dials a new one (2,071 dials per bench-rotations run
		// instead of 153). This one applies the same configured timeout
		// and leaves the context alive. vault/api is pinned in go.mod.
		//lint:ignore SA1019 the supported raw write drops its connection (above)
		resp, err := s.client.RawRequestWithContext(ctx, r)
		if resp != nil {
			defer resp.Body.Close()
		}
		if err != nil {
			return err
		}
		v, err = writtenVersion(resp.Body)
		return err
	})
	switch {
	case errors.Is(err, errNoVersion):
		// KV v1 answers a write with 204 and no body, taking "data/..."
		// as a plain key.
		return 0, &Error{Op: "write", Path: full, Kind: ErrMount, Detail: "the write returned no version; is the mount KV v1?"}
	case errors.Is(err, errMalformed):
		// Not Vault's JSON: say so without quoting it.
		return 0, &Error{Op: "write", Path: full, Detail: "the answer is not Vault's JSON; the write may have happened"}
	}
	if err != nil {
		return 0, classify(ctx, "write", full, err, s.secrets(scrub...))
	}
	s.log.Debug("vault: wrote secret", "path", full, "version", v)
	return v, nil
}

// kvWrite is the body of a KV v2 write.
type kvWrite struct {
	Data    map[string]string `json:"data"`
	Options *kvOptions        `json:"options,omitempty"`
}

type kvOptions struct {
	CAS int `json:"cas"`
}

// The answer to a write was empty, or not JSON.
var (
	errNoVersion = errors.New("no version in the answer")
	errMalformed = errors.New("malformed answer")
)

// maxWriteAnswer bounds the answer to a write read into memory: Vault's is
// a few hundred bytes of metadata.
const maxWriteAnswer = 1 << 20

// writtenVersion reads the version from the answer to a KV v2 write,
// {"data": {"version": N, ...}}.
func writtenVersion(body io.Reader) (int, error) {
	var ans struct {
		Data *struct {
			Version int `json:"version"`
		} `json:"data"`
	}
	limited := io.LimitReader(body, maxWriteAnswer)
	err := json.NewDecoder(limited).Decode(&ans)
	// Read to the end (Vault ends with a newline the decoder leaves):
	// a body closed unread closes the connection instead of reusing it.
	_, _ = io.Copy(io.Discard, limited)
	if errors.Is(err, io.EOF) || err == nil && (ans.Data == nil || ans.Data.Version <= 0) {
		return 0, errNoVersion
	}
	if err != nil {
		return 0, errMalformed
	}
	return ans.Data.Version, nil
}

// Get reads the latest version of path. It returns an error wrapping
// ErrNotFound when nothing is there or the latest version is deleted or
// destroyed.
func (s *Store) Get(ctx context.Context, path string) (map[string]string, int, error) {
	full, err := s.fullPath("read", path)
	if err != nil {
		return nil, 0, err
	}
	var kvs *api.KVSecret
	err = s.renewedOnce(ctx, func() (err error) { kvs, err = s.kv.Get(ctx, path); return err })
	if err != nil {
		return nil, 0, classify(ctx, "read", full, err, s.secrets())
	}
	data, err := s.decode("read", full, kvs)
	if err != nil {
		return nil, 0, err
	}
	return data, kvs.VersionMetadata.Version, nil
}

// GetVersion reads one version of path, e.g. the previous key during its
// grace period. It returns an error wrapping ErrNotFound when that version
// does not exist or is deleted or destroyed.
func (s *Store) GetVersion(ctx context.Context, path string, version int) (map[string]string, error) {
	op := fmt.Sprintf("read version %d of", version)
	full, err := s.fullPath(op, path)
	if err != nil {
		return nil, err
	}
	if version <= 0 {
		return nil, &Error{Op: op, Path: full, Detail: "versions start at 1"}
	}
	var kvs *api.KVSecret
	err = s.renewedOnce(ctx, func() (err error) { kvs, err = s.kv.GetVersion(ctx, path, version); return err })
	if err != nil {
		return nil, classify(ctx, op, full, err, s.secrets())
	}
	return s.decode(op, full, kvs)
}

// Versions returns the current version of path, counting a deleted latest
// version, or 0 when nothing was ever written there (or Delete removed it).
// Its result is the cas that makes the next Put succeed only if nobody else
// writes in between.
func (s *Store) Versions(ctx context.Context, path string) (int, error) {
	full, err := s.fullPath("read metadata of", path)
	if err != nil {
		return 0, err
	}
	md, err := s.kv.GetMetadata(ctx, path)
	if errors.Is(err, api.ErrSecretNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, classify(ctx, "read metadata of", full, err, s.secrets())
	}
	return md.CurrentVersion, nil
}

// Delete removes every version of path and its metadata, so that no
// private key lingers, e.g. at <vault_path>/pending once it is promoted.
// Deleting a path that does not exist succeeds.
func (s *Store) Delete(ctx context.Context, path string) error {
	full, err := s.fullPath("delete", path)
	if err != nil {
		return err
	}
	if err := s.renewedOnce(ctx, func() error { return s.kv.DeleteMetadata(ctx, path) }); err != nil {
		e := classify(ctx, "delete", full, err, s.secrets())
		if errors.Is(e, ErrNotFound) {
			return nil
		}
		return e
	}
	s.log.Debug("vault: deleted secret", "path", full)
	return nil
}

// Check tells whether Vault is usable: unsealed (else ErrSealed), reachable
// (else ErrUnreachable), the token valid (else ErrPermissionDenied), and the
// mount a KV v2 engine (else ErrMount).
//
// The mount is checked through sys/internal/ui/mounts/<mount>, the endpoint
// the vault CLI uses for the same purpose: Vault answers it for any token
// whose policies grant something under the mount, so the least-privilege
// policy of examples/vault-policy.hcl suffices, with no access to
// sys/mounts. Vault answers 403 both for a missing mount and for a mount the
// token may not touch; Check reports that as ErrMount too, since either way
// the configuration does not fit. Should Vault refuse even that endpoint,
// the first write of a KV v1 or missing mount reports ErrMount instead.
func (s *Store) Check(ctx context.Context) error {
	health, err := s.client.Sys().HealthWithContext(ctx)
	if err != nil {
		return classify(ctx, "check", s.client.Address(), err, s.secrets())
	}
	if health.Sealed {
		return &Error{Op: "check", Path: s.client.Address(), Kind: ErrSealed}
	}
	if !health.Initialized {
		return &Error{Op: "check", Path: s.client.Address(), Kind: ErrSealed, Detail: "vault is not initialized"}
	}

	if _, err := s.client.Auth().Token().LookupSelfWithContext(ctx); err != nil {
		e := classify(ctx, "check token at", s.client.Address(), err, s.secrets())
		if errors.Is(e, ErrPermissionDenied) {
			e.Detail = "token invalid or expired"
		}
		return e
	}

	sec, err := s.client.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/"+s.mount)
	if err != nil {
		e := classify(ctx, "check mount", s.mount, err, s.secrets())
		if errors.Is(e, ErrPermissionDenied) {
			e.Kind = ErrMount
			e.Detail = "no such mount, or the token's policies grant nothing under it"
		}
		return e
	}
	if sec == nil || sec.Data == nil {
		return &Error{Op: "check mount", Path: s.mount, Kind: ErrMount, Detail: "no such mount"}
	}
	// The endpoint answers for the mount that holds the path, so a nested
	// name like "secret/ssh" would be answered by "secret/".
	if got, _ := sec.Data["path"].(string); got != "" && strings.Trim(got, "/") != s.mount {
		return &Error{Op: "check mount", Path: s.mount, Kind: ErrMount,
			Detail: fmt.Sprintf("no such mount; the path belongs to mount %q", strings.Trim(got, "/"))}
	}
	typ, _ := sec.Data["type"].(string)
	var version string
	if opts, ok := sec.Data["options"].(map[string]any); ok {
		version, _ = opts["version"].(string)
	}
	if typ != "kv" || version != "2" {
		return &Error{Op: "check mount", Path: s.mount, Kind: ErrMount,
			Detail: fmt.Sprintf("engine is %q version %q, want \"kv\" version \"2\"", typ, version)}
	}
	return nil
}

// fullPath validates a path relative to the mount and returns it prefixed
// with the mount, as errors and logs show it.
func (s *Store) fullPath(op, path string) (string, error) {
	full := s.mount + "/" + path
	if path == "" || strings.HasPrefix(path, "/") || strings.HasSuffix(path, "/") {
		return "", &Error{Op: op, Path: full, Detail: "path must be relative to the mount, without leading or trailing slash"}
	}
	for _, seg := range strings.Split(path, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", &Error{Op: op, Path: full, Detail: "path has an empty, \".\" or \"..\" segment"}
		}
	}
	return full, nil
}

// decode turns a KV v2 answer into string data, treating a deleted or
// destroyed version as absent.
func (s *Store) decode(op, full string, kvs *api.KVSecret) (map[string]string, error) {
	if kvs == nil || kvs.VersionMetadata == nil {
		return nil, &Error{Op: op, Path: full, Kind: ErrMount, Detail: "answer without version metadata; is the mount KV v1?"}
	}
	if kvs.Data == nil || kvs.VersionMetadata.Destroyed || !kvs.VersionMetadata.DeletionTime.IsZero() {
		return nil, &Error{Op: op, Path: full, Kind: ErrNotFound,
			Detail: fmt.Sprintf("version %d is deleted", kvs.VersionMetadata.Version)}
	}
	data := make(map[string]string, len(kvs.Data))
	var bad []string
	for k, v := range kvs.Data {
		str, ok := v.(string)
		if !ok {
			bad = append(bad, k)
			continue
		}
		data[k] = str
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		// Name the fields, never their values.
		return nil, &Error{Op: op, Path: full, Detail: "fields are not strings: " + strings.Join(bad, ", ")}
	}
	return data, nil
}

// renewedOnce runs call; with AppRole, a call refused because the token
// expired before the background renewal replaced it (a race at the end of
// the token's max TTL) is tried once more after a fresh login.
func (s *Store) renewedOnce(ctx context.Context, call func() error) error {
	err := call()
	if err == nil || s.login == nil || !tokenExpired(err) {
		return err
	}
	s.log.Info("vault: token expired under a request; logging in again")
	if _, lerr := s.doLogin(ctx); lerr != nil {
		return err
	}
	return call()
}

// tokenExpired reports a 403 whose message says the token is no longer
// valid (expired or revoked), as opposed to a policy refusing the path.
func tokenExpired(err error) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 403 {
		return false
	}
	for _, m := range re.Errors {
		if strings.Contains(m, "invalid token") {
			return true
		}
	}
	return false
}

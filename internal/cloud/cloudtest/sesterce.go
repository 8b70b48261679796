package cloudtest

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// SesterceKey is one key as the Sesterce fake holds it.
//
// Default semantics (the real API does not document them, this is the
// fake's choice): a created key is not default until makedefault names it;
// makedefault clears every other key of the account, so an account has at
// most one default key. Deleting the default key leaves the account with
// none. Duplicate names are allowed, which is what makes an ambiguous create
// dangerous.
type SesterceKey struct {
	// Account is the account holding the key: 0 for Options.SesterceAPIKey,
	// i+1 for Options.SesterceAPIKeys[i].
	Account   int       `json:"account"`
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	PublicKey string    `json:"public_key"`
	IsDefault bool      `json:"is_default"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// maxNameLen bounds key names on both APIs.
const maxNameLen = 255

// maxRequestBody bounds request bodies the fake reads.
const maxRequestBody = 1 << 20

// jsTime is how a JavaScript Date serialises (Date.prototype.toJSON):
// millisecond precision, UTC, "Z".
const jsTime = "2006-01-02T15:04:05.000Z"

// sesterceKeyDTO is SSHKeyDto on the wire, plus the extra fields real
// responses carry.
type sesterceKeyDTO struct {
	ID        string         `json:"_id"`
	Name      string         `json:"name"`
	PublicKey string         `json:"publicKey"`
	IsDefault bool           `json:"isDefault"`
	CreatedAt string         `json:"createdAt"`
	UpdatedAt string         `json:"updatedAt"`
	User      map[string]any `json:"user"`
	V         int            `json:"__v"`
}

func (s *Server) sesterceDTO(k SesterceKey) any {
	return s.withExtras(sesterceKeyDTO{
		ID:        k.ID,
		Name:      k.Name,
		PublicKey: k.PublicKey,
		IsDefault: k.IsDefault,
		CreatedAt: k.CreatedAt.UTC().Format(jsTime),
		UpdatedAt: k.UpdatedAt.UTC().Format(jsTime),
		User:      map[string]any{"_id": s.users[k.Account], "email": fmt.Sprintf("owner%d@example.com", k.Account)},
	})
}

// sesterceError writes the body Sesterce documents for 403/404:
// {statusCode, timestamp, path, message}.
func (s *Server) sesterceError(w http.ResponseWriter, r *http.Request, status int, message string) {
	writeJSON(w, status, map[string]any{
		"statusCode": status,
		"timestamp":  s.now().UTC().Format(jsTime),
		"path":       r.URL.Path,
		"message":    message,
	})
}

// sesterceNotFound is the makedefault 404 body, which the reference shows
// without timestamp and path.
func sesterceNotFound(w http.ResponseWriter) {
	writeJSON(w, http.StatusNotFound, map[string]any{"statusCode": http.StatusNotFound, "message": "Not found"})
}

// sesterceValidation writes a NestJS ValidationPipe error: message is a list
// of strings, one per failed constraint. This shape is an assumption (the
// API is NestJS, per its operation IDs); clients must surface it either way.
func (s *Server) sesterceValidation(w http.ResponseWriter, r *http.Request, messages []string) {
	writeJSON(w, http.StatusBadRequest, map[string]any{
		"statusCode": http.StatusBadRequest,
		"timestamp":  s.now().UTC().Format(jsTime),
		"path":       r.URL.Path,
		"message":    messages,
		"error":      "Bad Request",
	})
}

// sesterceAuth checks x-api-key, returns the caller's account, and answers
// a failure itself.
func (s *Server) sesterceAuth(w http.ResponseWriter, r *http.Request) (account int, ok bool) {
	key := r.Header.Get("x-api-key")
	if acct, found := s.sesterceAccts[key]; found && key != "" {
		return acct, true
	}
	unknown := s.opts.SesterceUnknownAPIKey.Reveal()
	if key != "" && unknown != "" && secretEqual(key, unknown) &&
		(r.Method == http.MethodGet || r.Method == http.MethodPost) {
		s.sesterceError(w, r, http.StatusNotFound, "API key not found")
		return 0, false
	}
	s.sesterceError(w, r, http.StatusForbidden, "API key invalid")
	return 0, false
}

func secretEqual(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (s *Server) sesterceList(w http.ResponseWriter, r *http.Request) {
	acct, ok := s.sesterceAuth(w, r)
	if !ok {
		return
	}
	keys := s.SesterceAccountKeys(acct)
	out := make([]any, 0, len(keys))
	for _, k := range keys {
		out = append(out, s.sesterceDTO(k))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) sesterceCreate(w http.ResponseWriter, r *http.Request) {
	acct, ok := s.sesterceAuth(w, r)
	if !ok {
		return
	}
	var body struct {
		Name      *string `json:"name"`
		PublicKey *string `json:"publicKey"`
	}
	if err := decodeBody(w, r, &body); err != nil {
		// body-parser errors come back with a plain string message.
		s.sesterceError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	var problems []string
	switch {
	case body.Name == nil:
		problems = append(problems, "name must be a string")
	case *body.Name == "":
		problems = append(problems, "name should not be empty")
	case utf8.RuneCountInString(*body.Name) > maxNameLen:
		problems = append(problems, "name must be shorter than or equal to 255 characters")
	}
	var publicKey string
	if body.PublicKey == nil {
		problems = append(problems, "publicKey must be a string")
	} else {
		publicKey = strings.TrimSpace(*body.PublicKey)
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(publicKey)); err != nil {
			problems = append(problems, "publicKey must be a valid SSH public key")
		}
	}
	if len(problems) > 0 {
		s.sesterceValidation(w, r, problems)
		return
	}
	k := s.AddSesterceAccountKey(acct, *body.Name, publicKey, false)
	writeJSON(w, http.StatusCreated, s.sesterceDTO(k))
}

func (s *Server) sesterceMakeDefault(w http.ResponseWriter, r *http.Request) {
	acct, ok := s.sesterceAuth(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	s.mu.Lock()
	i := s.sesterceKeyLocked(acct, id)
	if i >= 0 {
		s.setSesterceDefaultLocked(i)
	}
	s.mu.Unlock()
	if i < 0 {
		sesterceNotFound(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// sesterceKeyLocked returns the index of account acct's key id, or -1:
// another account's key is not found; s.mu is held.
func (s *Server) sesterceKeyLocked(acct int, id string) int {
	return slices.IndexFunc(s.sesterce, func(k SesterceKey) bool { return k.ID == id && k.Account == acct })
}

// setSesterceDefaultLocked makes key i the only default of its account;
// s.mu is held.
func (s *Server) setSesterceDefaultLocked(i int) {
	now := s.now()
	for j := range s.sesterce {
		if s.sesterce[j].Account != s.sesterce[i].Account {
			continue
		}
		want := j == i
		if s.sesterce[j].IsDefault != want {
			s.sesterce[j].IsDefault = want
			s.sesterce[j].UpdatedAt = now
		}
	}
}

func (s *Server) sesterceDelete(w http.ResponseWriter, r *http.Request) {
	acct, ok := s.sesterceAuth(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	s.mu.Lock()
	var deleted SesterceKey
	i := s.sesterceKeyLocked(acct, id)
	if i >= 0 {
		deleted = s.sesterce[i]
		s.sesterce = slices.Delete(s.sesterce, i, i+1)
	}
	s.mu.Unlock()
	if i < 0 {
		sesterceNotFound(w)
		return
	}
	writeJSON(w, http.StatusOK, s.sesterceDTO(deleted))
}

// AddSesterceKey stores a key in account 0 as if created through the API
// and returns it. The public key is not validated, so tests can seed keys
// the client cannot parse. isDefault makes it the only default key.
func (s *Server) AddSesterceKey(name, publicKey string, isDefault bool) SesterceKey {
	return s.AddSesterceAccountKey(0, name, publicKey, isDefault)
}

// AddSesterceAccountKey is AddSesterceKey for account acct (see
// SesterceKey.Account); it panics on an account the fake does not have,
// a mistake in the test.
func (s *Server) AddSesterceAccountKey(acct int, name, publicKey string, isDefault bool) SesterceKey {
	if acct < 0 || acct >= len(s.users) {
		panic(fmt.Sprintf("cloudtest: no Sesterce account %d (the fake has %d)", acct, len(s.users)))
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	k := SesterceKey{Account: acct, ID: newHexID(), Name: name, PublicKey: publicKey, CreatedAt: now, UpdatedAt: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sesterce = append(s.sesterce, k)
	if isDefault {
		s.setSesterceDefaultLocked(len(s.sesterce) - 1)
		k = s.sesterce[len(s.sesterce)-1]
	}
	return k
}

// SesterceKeys returns the keys of every Sesterce account in creation
// order (account 0's alone, unless Options.SesterceAPIKeys adds accounts).
func (s *Server) SesterceKeys() []SesterceKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sesterce)
}

// SesterceAccountKeys returns the keys of Sesterce account acct in
// creation order: what a list with its API key shows.
func (s *Server) SesterceAccountKeys(acct int) []SesterceKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SesterceKey
	for _, k := range s.sesterce {
		if k.Account == acct {
			out = append(out, k)
		}
	}
	return out
}

// decodeBody reads a JSON object body of at most maxRequestBody bytes.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return errors.New("request entity too large")
		}
		return errors.New("unexpected token in JSON body")
	}
	return nil
}

// writeJSON writes v as the response body with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// withExtras returns v (a struct that marshals to a JSON object) with
// Options.ExtraKeyFields merged in.
func (s *Server) withExtras(v any) any {
	if len(s.opts.ExtraKeyFields) == 0 {
		return v
	}
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	// RawMessage keeps numbers (project IDs) exactly as encoded.
	m := map[string]json.RawMessage{}
	if err := json.Unmarshal(b, &m); err != nil {
		return v
	}
	for k, x := range s.opts.ExtraKeyFields {
		if _, ok := m[k]; ok {
			continue
		}
		if raw, err := json.Marshal(x); err == nil {
			m[k] = raw
		}
	}
	return m
}

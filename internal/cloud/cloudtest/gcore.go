package cloudtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

// GcoreKey is one key as the Gcore fake holds it. There is deliberately no
// private key field: a key the fake generates is returned once in the
// create response and never stored.
type GcoreKey struct {
	ID              string    `json:"id"`
	ProjectID       int64     `json:"project_id"`
	Name            string    `json:"name"`
	PublicKey       string    `json:"public_key"`
	Fingerprint     string    `json:"fingerprint"` // MD5 colon hex; "" when PublicKey does not parse
	SharedInProject bool      `json:"shared_in_project"`
	State           string    `json:"state"`
	CreatedAt       time.Time `json:"created_at"`
}

// Gcore list paging bounds (DESIGN.md §4).
const (
	gcoreDefaultLimit = 10
	gcoreMaxLimit     = 1000
)

// gcoreKeyDTO is a Gcore SSH key on the wire.
type gcoreKeyDTO struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	PublicKey       string `json:"public_key"`
	Fingerprint     string `json:"fingerprint"`
	CreatedAt       string `json:"created_at"`
	ProjectID       int64  `json:"project_id"`
	SharedInProject bool   `json:"shared_in_project"`
	State           string `json:"state"`
}

// gcoreCreatedDTO is the create response: the key plus private_key, null
// unless the fake generated the pair.
type gcoreCreatedDTO struct {
	gcoreKeyDTO
	PrivateKey *string `json:"private_key"`
}

func toGcoreDTO(k GcoreKey) gcoreKeyDTO {
	return gcoreKeyDTO{
		ID:              k.ID,
		Name:            k.Name,
		PublicKey:       k.PublicKey,
		Fingerprint:     k.Fingerprint,
		CreatedAt:       k.CreatedAt.UTC().Format(time.RFC3339),
		ProjectID:       k.ProjectID,
		SharedInProject: k.SharedInProject,
		State:           k.State,
	}
}

// gcoreExceptionClass names the exception_class Gcore's error bodies carry
// for a status.
func gcoreExceptionClass(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "ValidationError"
	case http.StatusUnauthorized:
		return "NotAuthenticated"
	case http.StatusForbidden:
		return "PermissionDenied"
	case http.StatusNotFound:
		return "NotFound"
	case http.StatusTooManyRequests:
		return "Throttled"
	case http.StatusServiceUnavailable:
		return "ServiceUnavailable"
	default:
		return "APIException"
	}
}

// gcoreError writes {exception_class, message, request_id}; request_id is
// the response's X-Request-ID.
func gcoreError(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, map[string]any{
		"exception_class": gcoreExceptionClass(status),
		"message":         message,
		"request_id":      w.Header().Get("X-Request-ID"),
	})
}

// gcoreAuth checks "Authorization: APIKey <token>" (scheme case-insensitive)
// and answers the failure itself.
func (s *Server) gcoreAuth(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if h == "" {
		w.Header().Set("WWW-Authenticate", "APIKey")
		gcoreError(w, http.StatusUnauthorized, "Authentication credentials were not provided.")
		return false
	}
	scheme, token, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "apikey") || !secretEqual(token, s.opts.GcoreAPIKey.Reveal()) {
		w.Header().Set("WWW-Authenticate", "APIKey")
		gcoreError(w, http.StatusUnauthorized, "Invalid API key.")
		return false
	}
	return true
}

// gcoreProject authenticates and parses {project_id}.
func (s *Server) gcoreProject(w http.ResponseWriter, r *http.Request) (int64, bool) {
	if !s.gcoreAuth(w, r) {
		return 0, false
	}
	p, err := strconv.ParseInt(r.PathValue("project_id"), 10, 64)
	if err != nil || p < 1 {
		gcoreError(w, http.StatusBadRequest, fmt.Sprintf("project_id: %q is not a valid project ID.", r.PathValue("project_id")))
		return 0, false
	}
	return p, true
}

func (s *Server) gcoreList(w http.ResponseWriter, r *http.Request) {
	project, ok := s.gcoreProject(w, r)
	if !ok {
		return
	}
	limit, offset, ok := gcorePaging(w, r, gcoreDefaultLimit)
	if !ok {
		return
	}
	writeGcorePage(w, s.GcoreKeys(project), limit, offset, func(k GcoreKey) any { return s.withExtras(toGcoreDTO(k)) })
}

func (s *Server) gcoreCreate(w http.ResponseWriter, r *http.Request) {
	project, ok := s.gcoreProject(w, r)
	if !ok {
		return
	}
	var body struct {
		Name            *string `json:"name"`
		PublicKey       *string `json:"public_key"`
		SharedInProject *bool   `json:"shared_in_project"`
	}
	if err := decodeBody(w, r, &body); err != nil {
		gcoreError(w, http.StatusBadRequest, "JSON parse error: "+err.Error())
		return
	}
	switch {
	case body.Name == nil:
		gcoreError(w, http.StatusBadRequest, "name: This field is required.")
		return
	case *body.Name == "":
		gcoreError(w, http.StatusBadRequest, "name: This field may not be blank.")
		return
	case utf8.RuneCountInString(*body.Name) > maxNameLen:
		gcoreError(w, http.StatusBadRequest, "name: Ensure this field has no more than 255 characters.")
		return
	}
	shared := true
	if body.SharedInProject != nil {
		shared = *body.SharedInProject
	}
	var publicKey string
	var privateKey *string
	if body.PublicKey != nil && strings.TrimSpace(*body.PublicKey) != "" {
		publicKey = strings.TrimSpace(*body.PublicKey)
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(publicKey)); err != nil {
			gcoreError(w, http.StatusBadRequest, "public_key: Invalid SSH public key.")
			return
		}
	} else {
		pub, priv, err := generateEd25519()
		if err != nil {
			gcoreError(w, http.StatusInternalServerError, "generate key pair")
			return
		}
		publicKey, privateKey = pub, &priv
	}
	k := s.addGcoreKey(project, *body.Name, publicKey, shared)
	writeJSON(w, http.StatusCreated, s.withExtras(gcoreCreatedDTO{gcoreKeyDTO: toGcoreDTO(k), PrivateKey: privateKey}))
}

// generateEd25519 returns a fresh pair as an authorized_keys line and an
// OpenSSH PEM private key.
func generateEd25519() (publicKey, privateKey string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate ed25519: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", "", fmt.Errorf("encode public key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return "", "", fmt.Errorf("encode private key: %w", err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))), string(pem.EncodeToMemory(block)), nil
}

// gcoreKey authenticates and finds {id} in {project_id}; it answers 404 itself.
func (s *Server) gcoreKey(w http.ResponseWriter, r *http.Request) (GcoreKey, bool) {
	project, ok := s.gcoreProject(w, r)
	if !ok {
		return GcoreKey{}, false
	}
	id := r.PathValue("id")
	s.mu.Lock()
	i := slices.IndexFunc(s.gcore[project], func(k GcoreKey) bool { return k.ID == id })
	var k GcoreKey
	if i >= 0 {
		k = s.gcore[project][i]
	}
	s.mu.Unlock()
	if i < 0 {
		gcoreError(w, http.StatusNotFound, fmt.Sprintf("SSH key %s not found.", id))
		return GcoreKey{}, false
	}
	return k, true
}

func (s *Server) gcoreGet(w http.ResponseWriter, r *http.Request) {
	if k, ok := s.gcoreKey(w, r); ok {
		writeJSON(w, http.StatusOK, s.withExtras(toGcoreDTO(k)))
	}
}

func (s *Server) gcorePatch(w http.ResponseWriter, r *http.Request) {
	k, ok := s.gcoreKey(w, r)
	if !ok {
		return
	}
	var body struct {
		SharedInProject *bool `json:"shared_in_project"`
	}
	if err := decodeBody(w, r, &body); err != nil {
		gcoreError(w, http.StatusBadRequest, "JSON parse error: "+err.Error())
		return
	}
	if body.SharedInProject == nil {
		gcoreError(w, http.StatusBadRequest, "shared_in_project: This field is required.")
		return
	}
	s.mu.Lock()
	keys := s.gcore[k.ProjectID]
	i := slices.IndexFunc(keys, func(x GcoreKey) bool { return x.ID == k.ID })
	if i >= 0 {
		keys[i].SharedInProject = *body.SharedInProject
		k = keys[i]
	}
	s.mu.Unlock()
	if i < 0 { // deleted between lookup and update
		gcoreError(w, http.StatusNotFound, fmt.Sprintf("SSH key %s not found.", k.ID))
		return
	}
	writeJSON(w, http.StatusOK, s.withExtras(toGcoreDTO(k)))
}

func (s *Server) gcoreDelete(w http.ResponseWriter, r *http.Request) {
	project, ok := s.gcoreProject(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	s.mu.Lock()
	keys := s.gcore[project]
	i := slices.IndexFunc(keys, func(k GcoreKey) bool { return k.ID == id })
	if i >= 0 {
		s.gcore[project] = slices.Delete(keys, i, i+1)
	}
	s.mu.Unlock()
	if i < 0 {
		gcoreError(w, http.StatusNotFound, fmt.Sprintf("SSH key %s not found.", id))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// AddGcoreKey stores a key in project as if created through the API with
// shared_in_project true, and returns it. The public key is not validated,
// so tests can seed keys the client cannot parse (their fingerprint is "").
func (s *Server) AddGcoreKey(project int64, name, publicKey string) GcoreKey {
	return s.addGcoreKey(project, name, publicKey, true)
}

func (s *Server) addGcoreKey(project int64, name, publicKey string, shared bool) GcoreKey {
	var fp string
	if pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(publicKey)); err == nil {
		fp = ssh.FingerprintLegacyMD5(pk)
	}
	k := GcoreKey{
		ID:              newUUID(),
		ProjectID:       project,
		Name:            name,
		PublicKey:       publicKey,
		Fingerprint:     fp,
		SharedInProject: shared,
		State:           "ACTIVE",
		// created_at goes on the wire with second precision.
		CreatedAt: s.now().UTC().Truncate(time.Second),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gcore[project] = append(s.gcore[project], k)
	return k
}

// GcoreKeys returns project's keys in creation order.
func (s *Server) GcoreKeys(project int64) []GcoreKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.gcore[project])
}

// GcoreProjects returns, in ascending order, the projects that hold keys.
func (s *Server) GcoreProjects() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ps []int64
	for p, keys := range s.gcore {
		if len(keys) > 0 {
			ps = append(ps, p)
		}
	}
	slices.Sort(ps)
	return ps
}
